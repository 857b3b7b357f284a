"""Data: embedded ShapesBench, the motion score, Grain input pipelines."""
