"""Autoscaling: labels (config), 1-second load windows, the pure scaling policy, the loop that
applies it, CPU sampling and the scale-from-zero activator."""
