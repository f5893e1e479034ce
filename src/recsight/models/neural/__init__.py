"""Neural recommenders on torch, sharing one training loop (`training.train_loop`).

- `SeedMLP` (``seed_mlp``): the seed's two-number MLP sketch, kept as a baseline.
- `DeepFM` (``deepfm``): FM + MLP over user/item ids and generic side features.
- `NeuMF` (``neumf``): GMF + MLP (He et al. 2017).
- `SASRec` (``sasrec``): causal self-attention over time-ordered histories; `loss` full
  softmax, sampled softmax (logQ-corrected) or gBCE (gSASRec), `auto` by catalog size.
- `BERT4Rec` (``bert4rec``): bidirectional masked-item prediction, same `loss` options.
  The sequence models share one hyperparameter declaration, `config.SequenceConfig`.
- `MultVAE` (``multvae``), `RecVAE` (``recvae``): variational autoencoders over user rows.
"""

from recsight.models.neural.bert4rec import BERT4Rec
from recsight.models.neural.deepfm import DeepFM
from recsight.models.neural.neumf import NeuMF
from recsight.models.neural.sasrec import SASRec
from recsight.models.neural.seed_mlp import SeedMLP
from recsight.models.neural.vae import MultVAE, RecVAE

__all__ = ["BERT4Rec", "DeepFM", "MultVAE", "NeuMF", "RecVAE", "SASRec", "SeedMLP"]
