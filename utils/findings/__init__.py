"""The README's findings, written from the committed results, so that its numbers cannot drift from the report.

    python -m utils.findings            # rewrite the README's two generated parts and figures/summary_forest.png
    python -m utils.findings --check    # exit 1 if either part or the figure differs from the results (tests do this)

Every number in the generated parts is read from `report/results/*.json` (the body-part task),
`report/abnormality/results/*.json` (MURA's normal/abnormal task), `report/recipe/*.json` (controlled training
runs, the learnability ladder) and `report/evidence/null_simulation.md` (the interval rule's measured error
rates); nothing is typed by hand. The README holds two generated parts:

- the *summary* (`SUMMARY_START` ... `SUMMARY_END`, `summary`): the research questions with their answers in plain
  words, a verdict table, the forest plot of every method against the MAP network (`forest_figure`, written to
  `figures/summary_forest.png`), the interval rule's error rates, the learnability ladder, links to the rendered
  notebooks and a glossary. Its answer sentences are templates whose verdict words are chosen from the intervals.
- the *details* (`START` ... `END`, `block`; `utils.site` puts the same block on the report's index page): the full
  tables of differences, whether the members fit, the controlled runs, MURA's per-study score and what the run
  does not settle, inside <details>.

Paired differences are the method minus the MAP network (member 0's where the method is fitted on member 0, as
the calibration chapter pairs them), with their 95 % study-bootstrap interval (`utils.evidence`). A difference is
called better or worse only where its interval excludes zero, and *borderline* where that interval ends within
rounding of zero at the printed precision (a rebuild on another host can move such a verdict); otherwise "no
difference shown", which is the absence of evidence, not evidence of no difference. A difference whose estimate
and both ends round to zero is *negligible* and printed in a finer unit (e.g. "× 10⁻⁴ nats"); one that is zero in
every replicate (temperature scaling's accuracy) is no verdict and is not counted as one.

What the generated text may say is bounded by the results: the ECE it leads with is the debiased ECE where the
results carry it (the plug-in ECE's intervals undercover and, between calibrated predictors, give false verdicts:
`null_simulation_line`); Q1's one word is computed from the verdicts (`_q1_headline`), without the all-weights
Laplace, whose sampled networks classify at chance (`all_weights_note`); a task whose networks are near-constant
predictors (`near_constant`) is named so in both answers, and its error-flag comparisons are marked as testing no
usable classifier; a claim with no interval in the results (the controlled runs, the direction of miscalibration
that the validation temperatures suggest) is stated as such or not made.
"""

from .words import (
    START, END, SUMMARY_START, SUMMARY_END, FOREST, FOREST_VERSION, GLOSSARY_HEADING, DETAILS_HEADING,
    LOWER_IS_BETTER, SCALE, NAME, FOREST_METRICS, TASKS, PLAIN, GLOSSARY, load_json, ci_text, SUPERSCRIPT,
    is_degenerate, is_negligible, num_text, verdict, label, paren_text, effect_text, row_delta, ece_metric,
    plain_words, is_all_weights, is_last_layer_laplace, is_bayesian, md_link, flag_rows, table_row,
    load_results, details_block,
)
from .forest import (
    all_weights_note, forest_rows, summary_forest_rows, verdict_count, forest_digest, forest_figure,
    write_forest, forest_is_current,
)
from .answers import (
    near_constant, q1_headline, q2_headline, verdict_rows, null_simulation_line, notebook_links, glossary_lines,
    summary,
)
from .ladder import (
    learnability_answer, learnability_headline, learnability_reason, learnability_rows, learnability_part,
    mura_size_line, scaling_line, budget_line, REPORT_BUDGET_S, ORDER_MIN_STUDIES, trade_line,
)
from .details import (
    delta_table, fit_line, recipe_markdown, caveats, block, rewrite, readme_text, findings_part, word_count,
    main,
)
