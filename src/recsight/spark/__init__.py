"""recsight on Apache Spark (`--engine spark`): the session (`session`), the dataset layout as
Spark tables (`layout`), the analysis on Spark, MLlib/TorchDistributor training and batch
recommendations. Importing this package does not import pyspark; the modules that need it
import it when called, so the local engine runs without the ``spark`` extra."""
