"""SavedModel export and the TF Serving client (to come with the export issue)."""
