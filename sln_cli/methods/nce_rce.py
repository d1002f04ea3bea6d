"""NCE+RCE, an active-passive loss (Ma et al., ICML 2020): `alpha·NCE + beta·RCE`, both robust to noise.

NCE = CE normalised by the sum of CE over all K labels: `log p_y / sum_k log p_k`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from sln_cli.methods.base import Configured, reverse_cross_entropy


class NceRce(Configured):
    def __call__(self, logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
        alpha, beta = self.settings.nce_rce_alpha, self.settings.nce_rce_beta
        log_p = F.log_softmax(logits.float(), dim=1)  # (B, K)
        nce = log_p.gather(1, self.labels[index][:, None]).squeeze(1) / log_p.sum(dim=1)  # (B,)
        return alpha * nce.mean() + beta * reverse_cross_entropy(logits, self.labels[index], self.num_classes)
