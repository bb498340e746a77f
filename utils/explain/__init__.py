"""Explanations: saliency methods on one network and on samples of a posterior (`methods`), explanations of
networks sampled from an all-weights posterior (`sampled`), and scores of maps against masks, baselines,
deletion curves and the randomisation check (`scores`)."""

from .methods import (
    BLACK, upsample, center_weights, cam_samples, normalize, aggregate, Explainer, CAM, GradCAM, Gradient,
    SmoothGrad, IntegratedGradients, METHODS, as_explainer, laplace_cams, laplace_cams_loop, gradient_samples,
    member_maps, dropout_rate, MeanProbs, forward_members, predicted_classes, explained_classes, maps_by_method,
    method_maps,
)
