"""LightningDataModules for classification and the batch samplers methods use."""
