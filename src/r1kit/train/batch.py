"""From rollouts to training tensors, and the log-prob forward pass.

A rollout batch is laid out as `[left-padded prompt | completion, right-padded]`, so every prompt
ends at the same column P and the completion logits are the last T+1 positions of the model's
output (one forward over `logits_to_keep` positions, never the prompt's vocabulary logits).
Position ids start at 0 at each row's first real token, exactly as the rollout engine numbered
them, so the trainer's log-probs of an unchanged policy equal the engine's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from r1kit.algo import entropy_from_logits, selective_log_softmax


@dataclass
class Batch:
    input_ids: torch.Tensor       # [B, P + T]
    attention_mask: torch.Tensor  # [B, P + T]  1 on real prompt and completion tokens
    position_ids: torch.Tensor    # [B, P + T]
    completion_mask: torch.Tensor  # [B, T]     1 on completion tokens that enter the loss
    prompt_len: int               # P

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: slice | torch.Tensor) -> "Batch":
        return Batch(self.input_ids[idx], self.attention_mask[idx], self.position_ids[idx],
                     self.completion_mask[idx], self.prompt_len)

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                     self.completion_mask.to(device), self.prompt_len)


def collate(prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
            loss_mask: list[bool] | None = None) -> Batch:
    """Left-pad prompts, right-pad completions; `loss_mask[i]=False` masks row i out of the loss."""
    B = len(prompt_ids)
    P = max(len(p) for p in prompt_ids)
    T = max(1, max(len(c) for c in completion_ids))
    input_ids = torch.full((B, P + T), pad_id, dtype=torch.long)  # [B, P+T]
    attn = torch.zeros((B, P + T), dtype=torch.long)  # [B, P+T]
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
        input_ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        attn[i, P - len(p):P] = 1
        if c:
            input_ids[i, P:P + len(c)] = torch.tensor(c, dtype=torch.long)
            attn[i, P:P + len(c)] = 1
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)  # [B, P+T]
    completion_mask = attn[:, P:].float()  # [B, T]
    if loss_mask is not None:
        completion_mask = completion_mask * torch.tensor(loss_mask, dtype=torch.float32)[:, None]  # [B, T]
    return Batch(input_ids, attn, position_ids, completion_mask, P)


def completion_logps(model, batch: Batch, temperature: float = 1.0, with_entropy: bool = False):
    """Per-token log-probs of the completion tokens (and optionally entropies), each [B, T].

    Logits are divided by `temperature`, as in sampling, so the ratio pi_theta / pi_old compares
    the same distributions the engine sampled from.
    """
    T = batch.input_ids.shape[1] - batch.prompt_len
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, logits_to_keep=T + 1, use_cache=False)
    logits = out.logits[:, :-1, :]  # [B, T, V]  position t predicts completion token t
    targets = batch.input_ids[:, batch.prompt_len:]  # [B, T]
    t = temperature if temperature > 0 else 1.0
    logps = selective_log_softmax(logits, targets, temperature=t)  # [B, T]
    entropy = entropy_from_logits(logits.detach(), temperature=t) if with_entropy else None  # [B, T]
    return logps, entropy


@torch.no_grad()
def batched_logps(model, batch: Batch, micro_batch_size: int, temperature: float) -> torch.Tensor:
    """`completion_logps` without gradients, in micro-batches (old and reference log-probs)."""
    was_training = model.training
    model.eval()
    parts = [completion_logps(model, batch.select(slice(i, i + micro_batch_size)), temperature)[0]
             for i in range(0, len(batch), micro_batch_size)]
    model.train(was_training)
    return torch.cat(parts)  # [B, T]
