"""GroupViT's image-text model and training loss (docs/groupvit.md, "The full image-text model").

``MultiLabelContrastive`` keeps NVlabs' constructor arguments and ``state_dict`` keys
(``img_encoder.*``, ``text_encoder.*``, ``img_projector.*``, ``text_projector.*``, ``logit_scale``,
``multi_label_logit_scale``): with the released config (``multi_label=3``) 407 tensors, 55.7 M
parameters, so NVlabs checkpoints load with ``strict=True``.

Losses (per rank, ``B`` local pairs, ``W`` ranks, features gathered with gradient):

* contrastive: ``x_i = normalize(img_projector(img_encoder(image)))``, ``t_j`` likewise for the
  caption; ``s = clamp(exp(logit_scale), max=100)``; ``L = 0.5 * (CE(s * x @ T_all^T, y) +
  CE(s * t @ X_all^T, y))`` with ``y = arange(B) + rank * B`` (the local pair's global index);
* multi-label (``multi_label = M > 0``): each image is also paired with ``M`` noun prompts of its
  caption; soft cross entropy of ``s' * x @ P_all^T`` against a target that puts ``1/M`` on each of
  the image's own ``M`` prompts, and of ``s' * p @ X_all^T`` against ``1`` on the prompt's image
  (``s'`` from ``multi_label_logit_scale`` unless ``share_temperature``); weighted by
  ``multi_label_loss_weight``.

Under ``torch.distributed`` every rank must hold the same ``B``. The per-rank loss is a mean over
the local rows; with ``all_gather``'s gradient (a sum over ranks in backward) and DDP's gradient
averaging, parameter gradients equal those of one process on the concatenated batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..common.distributed import rank_and_world
from .registry import build_model, register_model

__all__ = ["MultiLabelContrastive", "ProjectMLP", "gather_with_grad", "dist_rank_and_world"]


#: ``(rank, world_size)``, ``(0, 1)`` outside ``torch.distributed`` (the package's one definition).
dist_rank_and_world = rank_and_world


class _AllGatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward sums every rank's gradient for this rank's slice (a reduce-scatter).

    Written on the public collectives: ``torch.distributed.nn.functional.all_gather`` (what NVlabs'
    ``diffdist`` amounts to) is deprecated as of PyTorch 2.14.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        if dist.get_backend() == dist.Backend.NCCL:
            out = grad.new_empty((ctx.rows, *grad.shape[1:]))
            dist.reduce_scatter_tensor(out, grad)
            return out
        # backends without reduce-scatter (gloo): sum everything, keep our slice
        total = grad.clone()
        dist.all_reduce(total)
        return total[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``[B, ...]`` on each of ``W`` ranks -> ``[W*B, ...]`` (rank-major), differentiable.

    Backward sums the incoming gradients of all ranks into each rank's slice; ``x`` itself when
    not distributed.
    """
    _, world = rank_and_world()
    if world == 1:
        return x
    return _AllGatherWithGrad.apply(x.contiguous())


def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_j -target_ij * log_softmax(logits)_ij`` (timm's SoftTargetCrossEntropy)."""
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


class ProjectMLP(nn.Module):
    """NVlabs' projector: ``num_layers - 1`` x (1x1 Conv1d -> BatchNorm1d -> ReLU), then a 1x1 Conv1d.

    ``x [B, C]`` or ``[B, L, C]`` -> ``[B, out_dim]`` / ``[B, L, out_dim]``; BatchNorm statistics are
    taken over ``B * L``. Keys: ``linear_hidden.{0,1}.*``, ``linear_out.*`` (Conv1d weights
    ``[out, in, 1]``).
    """

    def __init__(self, in_dim: int = 256, inner_dim: int = 4096, out_dim: int = 256, num_layers: int = 2):
        super().__init__()
        hidden = []
        for i in range(num_layers - 1):
            hidden.append(nn.Conv1d(in_dim if i == 0 else inner_dim, inner_dim, kernel_size=1))
            hidden.append(nn.BatchNorm1d(inner_dim))
            hidden.append(nn.ReLU(inplace=True))
        self.linear_hidden = nn.Sequential(*hidden)
        if num_layers >= 1:
            self.linear_out = nn.Conv1d(in_dim if num_layers == 1 else inner_dim, out_dim, kernel_size=1)
        else:
            self.linear_out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 3):
            raise ValueError(f"ProjectMLP takes [B, C] or [B, L, C], got shape {tuple(x.shape)}")
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(1)
        x = self.linear_out(self.linear_hidden(x.transpose(1, 2))).transpose(1, 2)
        return x.squeeze(1) if squeeze else x


def _build_encoder(spec: Any, what: str) -> nn.Module:
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, Mapping):
        return build_model(spec)
    raise TypeError(f"{what} must be an nn.Module or a config dict with a 'type' key, got {type(spec).__name__}")


@register_model()
class MultiLabelContrastive(nn.Module):
    """GroupViT image-text model, drop-in for NVlabs' ``MultiLabelContrastive``.

    ``img_encoder`` / ``text_encoder``: modules (or NVlabs config dicts with ``type:``) with a
    ``width`` attribute; the image encoder is called as ``img_encoder(image, return_feat=...,
    return_attn=..., as_dict=True)`` (``groupvit_fast.GroupViT``), the text encoder as
    ``text_encoder(text [N, L]) -> [N, width]``.

    ``forward(image, text)``: in training mode the loss dict ``{'loss', 'multi_label_loss'?}``
    (``text [B, L]``, or ``[B, 1 + multi_label, L]`` with the caption first); in eval mode
    ``zero_shot_pred(image, text)`` with ``text`` the ``[K, C]`` class embedding matrix.

    Keyword-only extras (not in NVlabs; the defaults are NVlabs' behaviour): ``proj_inner_dim``
    (4096), the projectors' hidden width; ``sync_bn`` (True) converts the projectors' BatchNorm to
    ``SyncBatchNorm``, which has the same keys and equals BatchNorm outside distributed training
    (PyTorch's SyncBatchNorm refuses CPU tensors in distributed training: use ``sync_bn=False``
    there).
    """

    def __init__(
        self,
        img_encoder: nn.Module | Mapping[str, Any],
        text_encoder: nn.Module | Mapping[str, Any],
        output_dim: int = 256,
        contrast_temperature: float = 0.07,
        proj_num_layers: int = 2,
        multi_label: int = 0,
        share_temperature: bool = False,
        multi_label_loss_weight: float = 1.0,
        *,
        proj_inner_dim: int = 4096,
        sync_bn: bool = True,
    ):
        super().__init__()
        self.img_encoder = _build_encoder(img_encoder, "img_encoder")
        self.text_encoder = _build_encoder(text_encoder, "text_encoder")
        self.contrast_temperature = contrast_temperature
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / contrast_temperature))
        self.proj_num_layers = proj_num_layers
        self.multi_label = multi_label
        self.output_dim = output_dim
        if proj_num_layers > 0:
            self.img_projector = ProjectMLP(
                in_dim=self.img_encoder.width, inner_dim=proj_inner_dim, num_layers=proj_num_layers, out_dim=output_dim
            )
            self.text_projector = ProjectMLP(
                in_dim=self.text_encoder.width, inner_dim=proj_inner_dim, num_layers=proj_num_layers, out_dim=output_dim
            )
            if sync_bn:
                self.img_projector = nn.SyncBatchNorm.convert_sync_batchnorm(self.img_projector)
                self.text_projector = nn.SyncBatchNorm.convert_sync_batchnorm(self.text_projector)
        else:
            self.img_projector = nn.Identity()
            self.text_projector = nn.Identity()
        self.share_temperature = share_temperature
        if self.with_multi_label and not share_temperature:
            self.multi_label_logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / contrast_temperature))
        self.multi_label_loss_weight = multi_label_loss_weight

    @property
    def with_multi_label(self) -> bool:
        return self.multi_label > 0

    # ---- losses ----------------------------------------------------------------------------

    @staticmethod
    def _scale(param: torch.Tensor) -> torch.Tensor:
        return torch.clamp(param.exp(), max=100)

    def loss(self, image_x: torch.Tensor, text_x: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE of ``image_x [B, C]`` and ``text_x [B, C]`` over the global batch."""
        if image_x.shape != text_x.shape or image_x.dim() != 2:
            raise ValueError(
                f"image_x and text_x must both be [B, C], got {tuple(image_x.shape)} and {tuple(text_x.shape)}"
            )
        rank, _ = rank_and_world()
        batch = image_x.shape[0]
        labels = torch.arange(batch, device=image_x.device) + batch * rank
        image_x = F.normalize(image_x, dim=-1)
        text_x = F.normalize(text_x, dim=-1)
        scale = self._scale(self.logit_scale)
        logits_per_img = image_x @ gather_with_grad(text_x).t() * scale
        logits_per_text = text_x @ gather_with_grad(image_x).t() * scale
        return 0.5 * (F.cross_entropy(logits_per_img, labels) + F.cross_entropy(logits_per_text, labels))

    def multi_label_loss(self, image_feat: torch.Tensor, text_feat: torch.Tensor) -> torch.Tensor:
        """Soft-target InfoNCE of ``image_feat [B, L1, C]`` against ``text_feat [B, L2, C]``.

        Row ``(b, l1)`` of the image side targets ``1/L2`` on every global column
        ``(rank, b, l2)``; row ``(b, l2)`` of the text side ``1/L1`` on ``(rank, b, l1)``.
        """
        if image_feat.dim() != 3 or text_feat.dim() != 3 or image_feat.shape[0] != text_feat.shape[0]:
            raise ValueError(
                f"image_feat [B, L1, C] and text_feat [B, L2, C] expected, got "
                f"{tuple(image_feat.shape)} and {tuple(text_feat.shape)}"
            )
        rank, world = rank_and_world()
        batch, img_len, _ = image_feat.shape
        text_len = text_feat.shape[1]
        image_x = F.normalize(image_feat, dim=-1).flatten(0, 1)  # [(B L1), C]
        text_x = F.normalize(text_feat, dim=-1).flatten(0, 1)  # [(B L2), C]
        param = self.logit_scale if self.share_temperature else self.multi_label_logit_scale
        scale = self._scale(param)
        logits_per_img = image_x @ gather_with_grad(text_x).t() * scale  # [(B L1), (W B L2)]
        logits_per_text = text_x @ gather_with_grad(image_x).t() * scale  # [(B L2), (W B L1)]
        target_img = self._block_target(batch, img_len, text_len, rank, world, image_x)
        target_text = self._block_target(batch, text_len, img_len, rank, world, text_x)
        return 0.5 * (
            _soft_cross_entropy(logits_per_img, target_img) + _soft_cross_entropy(logits_per_text, target_text)
        )

    @staticmethod
    def _block_target(batch, rows_per, cols_per, rank, world, like) -> torch.Tensor:
        """``[(B rows_per), (W B cols_per)]``: ``1/cols_per`` where the row's and column's sample match on this rank."""
        target = like.new_zeros(batch, rows_per, world, batch, cols_per)
        idx = torch.arange(batch, device=like.device)
        target[idx, :, rank, idx, :] = 1.0 / cols_per
        return target.reshape(batch * rows_per, world * batch * cols_per)

    # ---- encoders --------------------------------------------------------------------------

    def encode_image(
        self,
        image: torch.Tensor,
        *,
        return_feat: bool = False,
        as_dict: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]:
        """``image [B, 3, H, W]`` -> ``image_x [B, output_dim]`` (+ ``image_feat [B, G, output_dim]``).

        Projected, not normalised. A tuple ``(image_x, image_feat)`` with ``return_feat``, a dict
        ``{'image_x', 'image_feat'?}`` with ``as_dict``.
        """
        outs = self.img_encoder(image, return_feat=return_feat, as_dict=True)
        result = {"image_x": self.img_projector(outs["x"])}
        if return_feat:
            result["image_feat"] = self.img_projector(outs["feat"])
        if as_dict:
            return result
        return (result["image_x"], result["image_feat"]) if return_feat else result["image_x"]

    def encode_text(
        self,
        text: torch.Tensor,
        *,
        as_dict: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | dict[str, torch.Tensor]:
        """``text [N, L]`` -> ``text_x [N, output_dim]``; ``text [B, 1+M, L]`` -> ``text_x [B, output_dim]``
        (the first text of each row) and ``text_multi_label_x [B, M, output_dim]``.

        Projected, not normalised. For 3-D input a tuple ``(text_x, text_multi_label_x)`` (NVlabs'
        tuple form also prepended the flat ``[(B N), C]`` tensor; its dict form is the one kept).
        """
        if text.dim() not in (2, 3):
            raise ValueError(f"text must be [N, L] or [B, N, L] token ids, got shape {tuple(text.shape)}")
        if text.dim() == 2:
            text_x = self.text_projector(self.text_encoder(text))
            return {"text_x": text_x} if as_dict else text_x
        batch, num_text = text.shape[:2]
        text_x = self.text_projector(self.text_encoder(text.flatten(0, 1)))
        text_x = text_x.view(batch, num_text, -1)
        result = {"text_x": text_x[:, 0], "text_multi_label_x": text_x[:, 1:]}
        return result if as_dict else (result["text_x"], result["text_multi_label_x"])

    # ---- forward ---------------------------------------------------------------------------

    def forward_train(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        """Loss dict for a batch of ``image [B, 3, H, W]`` and ``text [B, L]`` or ``[B, 1+M, L]``."""
        if self.with_multi_label and (text.dim() != 3 or text.shape[1] != 1 + self.multi_label):
            raise ValueError(
                f"multi_label={self.multi_label} needs text [B, {1 + self.multi_label}, L] (caption "
                f"first, then the noun prompts), got shape {tuple(text.shape)}"
            )
        if not self.with_multi_label and not (text.dim() == 2 or (text.dim() == 3 and text.shape[1] == 1)):
            raise ValueError(
                f"multi_label=0 trains on one caption per image: text [B, L] or [B, 1, L], got shape "
                f"{tuple(text.shape)}"
            )
        if image.shape[0] != text.shape[0]:
            raise ValueError(
                f"image and text must hold the same batch of pairs, got {image.shape[0]} images and "
                f"{text.shape[0]} texts"
            )
        image_x = self.encode_image(image)
        text_outs = self.encode_text(text, as_dict=True)
        losses = {"loss": self.loss(image_x, text_outs["text_x"])}
        if self.with_multi_label:
            losses["multi_label_loss"] = (
                self.multi_label_loss(image_x.unsqueeze(1), text_outs["text_multi_label_x"])
                * self.multi_label_loss_weight
            )
        return losses

    def forward_test(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.zero_shot_pred(image, text)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor] | torch.Tensor:
        """Training mode: ``forward_train``'s loss dict; eval mode: ``zero_shot_pred`` logits ``[B, K]``."""
        return self.forward_train(image, text) if self.training else self.forward_test(image, text)

    # ---- zero-shot helpers -----------------------------------------------------------------

    @torch.no_grad()
    def build_text_embedding(self, text: torch.Tensor) -> torch.Tensor:
        """``text [K, T, L]`` (K classes x T prompt templates) -> ``[K, output_dim]`` class embeddings.

        As NVlabs: the projected template embeddings are averaged, then L2-normalised.
        """
        if text.dim() != 3:
            raise ValueError(f"text must be [num_classes, num_templates, L], got shape {tuple(text.shape)}")
        text = text.to(next(self.parameters()).device)
        num_classes, num_templates = text.shape[:2]
        emb = self.encode_text(text.flatten(0, 1)).view(num_classes, num_templates, -1)
        return F.normalize(emb.mean(dim=1), dim=-1)

    @torch.no_grad()
    def zero_shot_pred(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine similarities ``[B, K]`` of the images to the ``[K, C]`` class embeddings ``text``."""
        image_features = F.normalize(self.encode_image(image), dim=-1)
        return image_features @ text.t()
