"""fasa: Feature Augmentation and Sampling Adaptation (ICCV 2021), reproduced as a suite."""

__version__ = "0.1.0"
