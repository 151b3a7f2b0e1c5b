"""One LightningModule per method; all subclass ClassifierModule, which owns evaluation of ``self.net``."""
