"""The README.md model card of an exported checkpoint."""

from __future__ import annotations

from typing import Any


def _number(value: Any, percent: bool) -> str:
    """A stored score as the CLI shows it: a fraction as a percentage with 2 decimals, an MSE with 4."""
    if not isinstance(value, int | float):
        return "n/a" if value is None else str(value)  # "inf" / "nan" as stored
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def _fmt_eval(result: dict[str, Any]) -> list[str]:
    """The meta-test table: accuracy in % (or MSE) ± 95% CI per method, then the paired meta-gain."""
    methods = result.get("methods", {})
    regression = any("mse" in r for r in methods.values())
    lines = ["| method | accuracy | 95% CI |" if not regression else "| method | MSE | 95% CI |", "|---|---|---|"]
    for method, r in methods.items():
        if regression:
            lines.append(f"| {method} | {_number(r.get('mse'), False)} | ± {_number(r.get('ci95'), False)} |")
        else:
            lines.append(f"| {method} | {_number(r.get('accuracy'), True)}% | ± {_number(r.get('ci95'), True)} |")
    gain = result.get("meta_gain")
    if gain:
        value, ci = gain.get("value"), gain.get("ci95")
        sign = "+" if isinstance(value, int | float) and value >= 0 else ""
        if regression:
            lines.append(f"\nMeta-gain (fine-tuned head MSE − meta MSE, paired): {sign}{_number(value, False)} "
                         f"± {_number(ci, False)}.")
        else:
            lines.append(f"\nMeta-gain (meta − fine-tuned head, paired): {sign}{_number(value, True)} "
                         f"± {_number(ci, True)} points.")
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
