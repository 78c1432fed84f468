"""The README.md model card of an exported checkpoint."""

from __future__ import annotations

from typing import Any


def _fmt_eval(result: dict[str, Any]) -> list[str]:
    lines = ["| method | score | 95% CI |", "|---|---|---|"]
    for method, r in result.get("methods", {}).items():
        key = "accuracy" if "accuracy" in r else "mse"
        val = r.get(key)
        ci = r.get("ci95")
        shown = f"{val * 100:.2f}%" if key == "accuracy" and val is not None else f"{val}"
        ci_s = f"± {ci * 100:.2f}" if key == "accuracy" and ci is not None else f"± {ci}"
        lines.append(f"| {method} | {shown} ({key}) | {ci_s} |")
    gain = result.get("meta_gain")
    if gain:
        lines.append(f"\nMeta-gain (meta − fine-tuned head, paired): {gain.get('value')} ± {gain.get('ci95')}.")
    return lines


def render_model_card(meta: dict[str, Any]) -> str:
    """Markdown describing what the checkpoint was trained on, how to load it and its numbers."""
    c = meta["config"]
    split = meta.get("label_split") or {}
    lines = [
        "---",
        "library_name: transformers",
        "tags: [meta-learning, few-shot, metastudio, " + c["algorithm"] + "]",
        "---",
        "",
        f"# {meta.get('name') or 'MetaStudio checkpoint'}",
        "",
        f"Meta-trained with **{c['algorithm']}** by MetaStudio (run {meta.get('run_id')}, status "
        f"{meta.get('status')}, {meta.get('iterations')} outer-loop iterations) from the base model "
        f"`{c['model']}`.",
        "",
        "## Training",
        "",
        f"- Data set: `{c['dataset']}` (sha256 `{meta.get('data_fingerprint', '')[:16]}…`), text column "
        f"`{c['text_column']}`, label column `{c['label_column']}`.",
        f"- Episodes: {c['n_way']}-way {c['k_shot']}-shot, {c['q_query']} query examples per class, "
        f"meta-batch {c['meta_batch_size']}.",
        f"- Inner loop: {c['inner_steps']} steps at lr {c['inner_lr']}; outer lr {c['outer_lr']}; "
        f"adapt_layers {c['adapt_layers']}, train_layers {c['train_layers']}.",
    ]
    if split:
        lines.append(f"- Class-disjoint label split ({split.get('origin')}): {len(split.get('train', []))} "
                     f"meta-train / {len(split.get('val', []))} meta-val / {len(split.get('test', []))} "
                     "meta-test labels (listed in `metastudio.json`).")
    lines += ["", "## Results", ""]
    evals = meta.get("evaluations") or []
    if evals:
        last = evals[-1]
        lines.append(f"Meta-test, {last.get('episodes')} episodes on held-out classes:")
        lines.append("")
        lines += _fmt_eval(last)
    else:
        best = meta.get("best_val_accuracy")
        lines.append("Not evaluated on meta-test yet (run `metastudio eval RUN_ID`)."
                     + (f" Best meta-val accuracy during training: {best:.4f}." if best is not None else ""))
    lines += [
        "",
        "## Load it",
        "",
        "```python",
        "from engine import load_checkpoint            # MetaStudio",
        "clf = load_checkpoint(\"path/to/this/folder\")",
        "clf.adapt([\"wake me at 7\", \"what's the weather\"], [\"alarm\", \"weather\"])",
        "print(clf.predict([\"set an alarm for six\"])[0].label)",
        "",
        "from transformers import AutoModel, AutoTokenizer  # the encoder alone",
        "encoder = AutoModel.from_pretrained(\"path/to/this/folder\")",
        "```",
        "",
        "Files: `config.json` + `model.safetensors` + tokenizer files (the encoder, with meta-trained layers "
        "merged in), `metastudio_head.safetensors` (head initialisation, embedding scale, adapters and any "
        "learned inner learning rates), `metastudio.json` (experiment config, data fingerprint, label split, "
        "evaluations).",
        "",
    ]
    return "\n".join(lines)
