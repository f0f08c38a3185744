"""A tiny random-weight Qwen2.5-VL model folder, built at run time (no download, no weights anywhere).

``make_tiny_qwen2_5_vl(folder)`` writes a folder that loads exactly like a user's real model folder
(``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True)``): the
family's real config and model class at toy sizes (a 2-layer 64-wide language model, a 1-layer 32-wide
vision tower), a byte-level BPE tokenizer (about 640 tokens) trained here on a small English + JSON corpus
with the family's special tokens, the real processor and a ChatML chat template: about 1 MB, built in well
under a second. Its answers are garbage; it exists so that ``lvlmva-desktop --self-test`` can drive the
real local back-end end to end. The test suite's tiny models of other families (tests/fixtures/tiny_lvlm.py)
build on the helpers here. Qt-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CORPUS = [
    '{"segments": [{"segment": 1, "verdict": "spurious", "reason": "tag"}, '
    '{"segment": 2, "verdict": "relevant", "reason": "lesion"}]}',
    '{"segments": [{"segment": 3, "verdict": "relevant", "reason": "the digit stroke"}]}',
    '{"verdict": "spurious", "reason": "a coloured patch in the corner, not part of the object"}',
    '{"1": "irrelevant", "segment 2": "core", "verdicts": [{"id": 4, "spurious": true, "relevant": false}]}',
    "You are an expert auditing an image classifier. The first image is the input image. "
    "The second image shows the same image with numbered segments drawn over it.",
    "For each numbered segment, say whether the classifier's evidence there is relevant to the class "
    "or spurious (a shortcut such as a watermark, a tag, a ruler, a border or the background).",
    "Answer in JSON with one entry per segment: segment number, verdict and a short reason.",
    "Reply with nothing but the JSON object. Notes: the segment covers the top left corner.",
    "Describe the image. What is in the centre? Is segment 5 relevant or spurious?",
    "The model predicted the class cat with probability 0.93; the true class is dog.",
    "A small test image: a red square on a blue background. What do you see?",
    "The lesion is in the centre of the skin image; the ruler and the hair are at the border.",
    "Solar cell defects: cracks and dark regions are relevant; the busbars and the frame are not.",
    "Hello! How are you today? I am fine, thank you. The quick brown fox jumps over the lazy dog.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 20 25 32 64 100 128 256 512 0.5 0.25 1.0",
    "system user assistant model image picture segment overlay heat map attribution evidence class label",
]


# -- tokenizer --------------------------------------------------------------------------------------------
def train_tokenizer(
    specials: Sequence[str],
    named: dict[str, str],
    extra_named: dict[str, str] | None = None,
    vocab: int = 640,
):
    """A byte-level BPE tokenizer trained on the built-in corpus, with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=list(specials),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    kwargs = dict(named)
    if extra_named:
        kwargs["extra_special_tokens"] = dict(extra_named)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **kwargs)
    fast.padding_side = "left"
    return fast


def token_ids(tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def vocab_size(tokenizer) -> int:
    """The tokenizer's size rounded up to a multiple of 16 (the embedding's rows)."""
    return ((len(tokenizer) + 15) // 16) * 16


def text_dims(**extra) -> dict:
    """The toy language model: 2 layers, 64 wide."""
    return dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=8192,
        **extra,
    )


# -- Qwen VL ----------------------------------------------------------------------------------------------
# Shaped like the family's published chat template.
CHATML_VL = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_tokenizer_and_text():
    """The ChatML tokenizer and tiny language-model dimensions shared by the Qwen VL families."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"]
    specials += ["<|image_pad|>", "<|video_pad|>"]
    tok = train_tokenizer(specials, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    pad, im_end, vs, ve, img, vid = token_ids(
        tok,
        "<|endoftext|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    )
    text = text_dims(
        vocab_size=vocab_size(tok),
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=pad,
        eos_token_id=im_end,
        pad_token_id=pad,
    )
    return tok, (pad, im_end, vs, ve, img, vid), text


def qwen2_5_vl_parts():
    """(config, processor, eos ids, pad id, bos id) of a tiny Qwen2.5-VL on 28-56 px images."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tok, (pad, im_end, vs, ve, img, vid), text = qwen_tokenizer_and_text()
    vision = dict(
        depth=1,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,
        out_hidden_size=64,
        fullatt_block_indexes=[0],
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=img,
        video_token_id=vid,
        vision_start_token_id=vs,
        vision_end_token_id=ve,
    )
    size = {"shortest_edge": 28 * 28, "longest_edge": 56 * 56}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(size=size),
        chat_template=CHATML_VL,
    )
    return config, processor, [im_end, pad], pad, pad


# -- saving -----------------------------------------------------------------------------------------------
def save_tiny_lvlm(parts: tuple, folder: Path, seed: int = 0) -> Path:
    """Instantiate random weights for ``parts`` (config, processor, eos ids, pad id, bos id) and save model +
    processor into ``folder`` (safetensors)."""
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    config, processor, eos_ids, pad_id, bos_id = parts
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=eos_ids, pad_token_id=pad_id, do_sample=False
    )
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder


def make_tiny_qwen2_5_vl(folder: Path, seed: int = 0) -> Path:
    """Build a tiny random-weight Qwen2.5-VL and save it into ``folder``; return the folder."""
    return save_tiny_lvlm(qwen2_5_vl_parts(), folder, seed)
