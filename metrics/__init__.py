"""metrics: evaluation metrics (FID, KID, precision/recall, IS)."""
