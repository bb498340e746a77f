"""One module per notebook: the tables, figures and Reading of a chapter, computed from a `utils.run.Run`
(`explore` 00, `plots` 01 and shared figures, `laplace` 02, `ensembles` 03, `calibration` 04, `explanations`,
`explain_plots`, `weight_explanations` 05, `robustness` 06, `abnormality` and `counterfactual` 07)."""
