"""Winnow: from scraped pictures to a served fastai image classifier."""
