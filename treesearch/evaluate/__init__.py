"""Reading runs back: reports with intervals, scaling curves from one run, paired comparisons."""
