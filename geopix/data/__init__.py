"""Datasets: paired training data and pairs cut from co-registered rasters."""
