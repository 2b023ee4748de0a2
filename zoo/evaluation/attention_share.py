"""Where answers look: MASH-VLM's Fig. 6 diagnostic.

For each question of a benchmark (teacher-forced with its reference answer), the attention
that the answer tokens pay to each kind of token (spatial, temporal, frame, ... and text),
averaged over layers, heads and answer tokens, then over the questions of each type
(``question_type`` of UNSCENE binary entries: action or scene). A model that keeps spatial
and temporal information apart should look at temporal tokens for action questions and at
spatial tokens for scene questions. Attention weights need the eager implementation; the
model is switched to it for the measurement and back.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch

from components.token_metadata import TokenKind
from zoo.data.dataset import SkippingCollate, build_dataset
from zoo.data.prompting import IGNORE


def attention_by_kind(model, batch) -> list[dict[str, float]]:
    """Per sample: kind name -> share of the answer tokens' attention, averaged over layers and heads."""
    visual = model.encode_video(batch.pixels, batch.instruction)
    sequence = model.assemble(batch, visual)
    mask, positions = model.attention_inputs(sequence)
    out = model.llm.decoder(inputs_embeds=sequence.inputs_embeds, attention_mask=mask, position_ids=positions,
                            output_attentions=True)
    attention = torch.stack(out.attentions).mean(dim=(0, 2))  # (B, L, L): layers and heads averaged
    shares = []
    for b in range(sequence.batch_size):
        answer = sequence.labels[b] != IGNORE
        rows = attention[b][answer]  # the answer tokens as queries
        result = {}
        for kind in TokenKind:
            keys = sequence.kind[b] == kind
            if kind is not TokenKind.PAD and bool(keys.any()):
                result[kind.name.lower()] = float(rows[:, keys].sum(dim=1).mean())
        shares.append(result)
    return shares


@torch.no_grad()
def answer_attention(model, annotation_file, max_samples: int | None = 64) -> dict[str, dict[str, float]]:
    """Question type -> kind -> mean share of attention (answers teacher-forced)."""
    previous = model.llm.attn_implementation
    model.llm.base.set_attn_implementation("eager")
    model.eval()
    try:
        dataset = build_dataset(model.recipe, model, annotation_file, max_samples=max_samples)
        collate = SkippingCollate(model.pad_id)
        sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        counts: dict[str, int] = defaultdict(int)
        for index in range(len(dataset)):
            sample = dataset[index]
            batch = collate([sample])
            if isinstance(batch, list):
                continue
            question_type = sample.info.get("question_type") or sample.info.get("task_type") or "all"
            for kind, share in attention_by_kind(model, batch.to(model.device))[0].items():
                sums[question_type][kind] += share
            counts[question_type] += 1
        return {qt: {kind: value / counts[qt] for kind, value in kinds.items()} for qt, kinds in sums.items()}
    finally:
        model.llm.base.set_attn_implementation(previous)


def plot_attention(shares: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    question_types = sorted(shares)
    kinds = sorted({k for values in shares.values() for k in values if k != "text"})
    figure, axis = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / max(len(kinds), 1)
    for i, kind in enumerate(kinds):
        axis.bar([q + i * width for q in range(len(question_types))], [shares[qt].get(kind, 0.0) for qt in question_types],
                 width, label=f"{kind} tokens")
    axis.set_xticks([q + width * (len(kinds) - 1) / 2 for q in range(len(question_types))],
                    [f"{qt} questions" for qt in question_types])
    axis.set_ylabel("share of the answer's attention")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_attention_report(shares: dict, out_dir: Path, title: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "answer_attention.json").write_text(json.dumps(shares, indent=2, sort_keys=True))
    return [out_dir / "answer_attention.json", plot_attention(shares, out_dir / "answer_attention.png", title)]
