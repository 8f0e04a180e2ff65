"""Training-time arithmetic of Caffe's solvers: learning-rate policies and update rules."""
