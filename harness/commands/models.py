"""``harness models``: model backends and families with their knob ranges and tiers."""

from __future__ import annotations

import click

MOLMOE_NOTE = ("molmoe: the checkpoint's own remote code, loaded on this transformers through an in-memory "
               "compatibility layer; needs --trust-remote-code and pip install -e '.[molmoe]'; tested on a small "
               "random checkpoint of the real classes; MolmoE-1B's own weights and scores are not verified here; "
               "it runs on both engines (fast, the default on CUDA, reads the remote model's own weights).")


def _rows():
    from harness.backends import describe
    from harness.backends.layouts import TEXT_LAYOUTS
    from harness.errors import HarnessError

    rows = []
    try:
        ref = describe("reference")
        rows.append(("reference", ref.family, ref.knob_range, _tiers(ref), "bundled model (harness/zoo/reference)"))
    except HarnessError as exc:
        rows.append(("reference", "llava+olmoe", "-", "-", f"not available: {exc}"))
    rnd = describe("random:molmoe-1b")
    rows.append(("random:molmoe-1b", rnd.family, rnd.knob_range, _tiers(rnd), f"{rnd.n_params / 1e9:.1f}B random params; latency only"))
    rows.append(("molmoe:<path>", "molmoe", "num_blocks N-4..N, top_k 1..moe_top_k", "low/medium/high = max_crops 2/6/12",
                 f"blocks model.transformer.blocks, top_k mlp.top_k; {MOLMOE_NOTE}"))
    families = sorted({lay.family: lay for lay in TEXT_LAYOUTS.values()}.items())
    for fam, lay in families:
        where = f"layers[i].{lay.router_path}.top_k"
        if fam == "qwen3_vl_moe":
            rows.append((f"hf:<path> ({fam})", fam, "from config", "-", f"{where}; describe only: generation refused (deepstack by loop position, M-RoPE)"))
        else:
            rows.append((f"hf:<path> ({fam})", fam, "num_blocks N-4..N, top_k 1..num_experts_per_tok", "-", f"{where}; also as the LM of a LLaVA VLM (tiers = image sizes)"))
    return rows


def _tiers(info) -> str:
    if not info.tiers:
        return "-"
    parts = []
    for t in info.tiers:
        vt = info.vision_tokens.get(t)
        parts.append(f"{t}{'*' if t == info.default_tier else ''}" + (f" ({vt} vis tok)" if vt is not None else ""))
    return ", ".join(parts)


@click.command("models")
@click.option("--model", "spec", default=None, help="Describe one model spec (configs only, no weights).")
def command(spec):
    """List model backends and their knob ranges and tiers (* = default tier)."""
    from harness.console import console as make_console
    from harness.console import print_table
    from rich.table import Table

    console = make_console()
    if spec:
        from harness.backends import describe

        info = describe(spec)
        table = Table(title=f"{info.name}")
        table.add_column("field")
        table.add_column("value")
        for k, v in (("family", info.family), ("blocks", info.n_blocks), ("knob range", info.knob_range),
                     ("tiers", _tiers(info)), ("params", info.n_params or "-"), ("notes", info.notes or "-")):
            table.add_row(k, str(v))
        print_table(table)
        return
    table = Table(title="model backends (knobs: --knobs B,K[,TIER]; block 0 always kept, top_k applies after block 0)")
    for col in ("spec", "family", "knob range", "tiers", "notes"):
        table.add_column(col, overflow="fold")
    for row in _rows():
        table.add_row(*[str(x) for x in row])
    print_table(table)
    console.print("experts implementations (hf, random): eager, grouped_mm (default), batched_mm; --engine fast (default on CUDA) = the harness's compiled block step with CUDA graphs")
