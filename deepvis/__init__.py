"""deepvis: see inside a convolutional network (Yosinski et al. 2015)."""
