"""Export a trained ``gpt`` model to TransformerLens (optional extra ``interp``).

``tl_state_dict`` maps our weights onto TransformerLens's parameter layout: embed.W_E,
pos_embed.W_pos, blocks.{l}.attn.W_{Q,K,V} [heads, d_model, d_head], W_O [heads, d_head, d_model], mlp.W_in/W_out,
ln1/ln2/ln_final, unembed.W_U (tied: a copy of W_E^T) and b_U (zeros). A shared-layer model is unrolled into one
copy per applied layer. ``to_transformer_lens`` builds a live TL model: TransformerBridge.boot_native (TL 4.x) or
HookedTransformer (TL 3.x), whichever is installed.
"""

from __future__ import annotations

import torch

from grokscope.errors import GrokscopeError
from grokscope.models.gpt import GPT


def tl_config(model: GPT) -> dict:
    c = model.cfg
    return dict(n_layers=c.n_layers, d_model=c.d_model, d_head=c.d_head, n_heads=c.n_heads, d_mlp=c.mlp_width,
                d_vocab=c.d_vocab, n_ctx=c.n_ctx, act_fn="gelu_new", normalization_type="LN", eps=c.ln_eps,
                positional_embedding_type="standard")


@torch.no_grad()
def tl_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    c = model.cfg
    H, dh, D = c.n_heads, c.d_head, c.d_model
    sd = {"embed.W_E": model.wte.weight.clone(), "pos_embed.W_pos": model.wpe.weight.clone(),
          "ln_final.w": model.ln_final.weight.clone(), "ln_final.b": model.ln_final.bias.clone(),
          "unembed.W_U": model.wte.weight.T.clone(), "unembed.b_U": torch.zeros(c.d_vocab)}
    for layer in range(c.n_layers):
        block = model.block_of_layer(layer)  # shared blocks are unrolled: one copy per applied layer
        p = f"blocks.{layer}."
        w_qkv, b_qkv = block.attn.c_attn.weight, block.attn.c_attn.bias  # [3D, D], [3D]
        for i, name in enumerate("QKV"):
            w = w_qkv[i * D:(i + 1) * D]  # [D_out, D_in] -> [H, D_in, dh]
            sd[p + f"attn.W_{name}"] = w.view(H, dh, D).transpose(1, 2).clone()
            sd[p + f"attn.b_{name}"] = b_qkv[i * D:(i + 1) * D].view(H, dh).clone()
        sd[p + "attn.W_O"] = block.attn.c_proj.weight.T.reshape(H, dh, D).clone()
        sd[p + "attn.b_O"] = block.attn.c_proj.bias.clone()
        sd[p + "mlp.W_in"] = block.mlp.c_fc.weight.T.clone()
        sd[p + "mlp.b_in"] = block.mlp.c_fc.bias.clone()
        sd[p + "mlp.W_out"] = block.mlp.c_proj.weight.T.clone()
        sd[p + "mlp.b_out"] = block.mlp.c_proj.bias.clone()
        for ln, ours in (("ln1", block.ln_1), ("ln2", block.ln_2)):
            sd[p + f"{ln}.w"], sd[p + f"{ln}.b"] = ours.weight.clone(), ours.bias.clone()
    return sd


def to_transformer_lens(model: GPT):
    """A TransformerLens model with the same function as ``model`` (eval mode)."""
    if not isinstance(model, GPT):
        raise GrokscopeError(f"only gpt models export to TransformerLens (this is a {model.family} model)")
    cfg, sd = tl_config(model), tl_state_dict(model)
    try:
        from transformer_lens.model_bridge import TransformerBridge
        from transformer_lens.config import TransformerBridgeConfig
        from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint
    except ImportError:
        TransformerBridge = None
    if TransformerBridge is not None:
        bridge_cfg = TransformerBridgeConfig(**cfg)
        tl = TransformerBridge.boot_native(bridge_cfg)
        tl.load_state_dict(convert_tl_checkpoint(sd, bridge_cfg), strict=True)
        return tl.eval()
    try:
        from transformer_lens import HookedTransformer, HookedTransformerConfig
    except ImportError:
        raise GrokscopeError("transformer-lens is not installed; install the extra: pip install "
                             "'grokscope[interp]'") from None
    tl = HookedTransformer(HookedTransformerConfig(**cfg))
    tl.load_and_process_state_dict(dict(sd), fold_ln=False, center_writing_weights=False,
                                   center_unembed=False, fold_value_biases=False)
    return tl.eval()
