"""Scoring captions: the COCO metrics, grounding against the synthetic ground truth, caption
diversity, and the statistics that compare configurations over seeds."""
