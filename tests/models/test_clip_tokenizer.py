"""shiwu's Chinese-CLIP tokenizer (Hugging Face ``tokenizers``) gives the reference's token ids.

References: ``cn_clip.clip.utils.tokenize`` (with ``bert_tokenizer.FullTokenizer``), and
ModelScope's ``FullTokenizer`` with the ``tokenize`` of its ``CLIPPreprocessor`` (transcribed
below: its module imports video and audio packages).
"""

import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support.clip_references import cn_clip, cn_clip_folder, modelscope_clip
from shiwu.models.clip_tokenizer import CONTEXT_LENGTH, ClipTokenizer

CORPUS = [
    # Chinese
    "一张猫的照片。", "电饭煲", "油菜花田", "快递柜", "海边的日落", "一只橘猫躺在沙发上，旁边放着一个红色的保温杯！",
    # English, any case
    "A photo of a Tabby CAT.", "Hello, World!", "don't stop", "unaffable", "e-mail U.S.A. 3.14", "iPhone",
    # mixed
    "iPhone 15 Pro 手机壳", "2024年的GPU服务器", "Wi-Fi路由器（白色）", "买了3斤apple和banana",
    # full-width letters, digits, punctuation and space
    "ＡＢＣ１２３！？", "（全角括号）【方括号】《书名号》", "ｈｅｌｌｏ\u3000ｗｏｒｌｄ", "ｶﾀｶﾅ",
    # emoji: plain, skin tone, ZWJ sequence (U+200D is Cf: removed), flag, newer emoji
    "🐱猫咪😂", "👍🏽", "👨\u200d👩\u200d👧", "🇨🇳", "🥰🫠", "猫🐈‍⬛",
    # accents, ligatures, special casing
    "café naïve Ångström", "Crème brûlée", "İstanbul", "ΟΔΟΣ ΑΣ ΣΑ", "Straße", "ǅungla", "ﬁnance",
    "e\u0301\u0316", "Ⅻ ① ㎏",
    # control and format characters, whitespace of every kind
    "a\x00b\x01c\td\ne\rf\x0bg\x0ch", "\u200b零宽\u200d连接", "\ufeffBOM", "\x7f\x85", "soft\u00adhyphen",
    "line\u2028separator\u2029para", "no\u00a0break\u2003em", "\ufffd替换",
    # empty and blank
    "", " ", "   \t\n ",
    # longer than the context; a word over 200 characters; exactly 200
    "猫" * 100, "a" * 250, "a" * 200, "word " * 60, "超长的标签" * 12 + "end",
    # the special tokens' spelling is plain text
    "[CLS] [SEP] [PAD] [UNK] [MASK]", "##ing",
    # other scripts
    "こんにちは、カタカナ", "안녕하세요", "مرحبا بالعالم", "สวัสดีครับ", "नमस्ते", "Привет, мир",
    # where the Unicode tables of tokenizers and of Python disagree
    "\ue000abc", "私用\U000F0000区", "𫠠猫", "a𫠠b", "豈更車", "a\u2e55b", "a\u0890b", "ab\ud800cd",
]


def modelscope_tokenize(tokenizer, texts, context_length=CONTEXT_LENGTH):
    """``CLIPPreprocessor.tokenize`` (modelscope/preprocessors/multi_modal.py), transcribed."""
    all_tokens = [[tokenizer.vocab["[CLS]"]]
                  + tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))[:context_length - 2]
                  + [tokenizer.vocab["[SEP]"]] for text in texts]
    result = np.zeros((len(all_tokens), context_length), dtype=np.int64)
    for i, tokens in enumerate(all_tokens):
        result[i, :len(tokens)] = tokens
    return result


@pytest.fixture(scope="module")
def vocab_path():
    return cn_clip_folder() / "vocab.txt"


@pytest.fixture(scope="module")
def ours(vocab_path):
    return ClipTokenizer.from_file(vocab_path)


@pytest.fixture(scope="module")
def cn_reference():
    return cn_clip()


@pytest.fixture(scope="module")
def modelscope_reference(vocab_path):
    return modelscope_clip().bert_tokenizer.FullTokenizer(vocab_file=str(vocab_path))


def test_corpus_ids_equal_cn_clip_tokenize(ours, cn_reference):
    expected = cn_reference.utils.tokenize(CORPUS).numpy()
    actual = ours(CORPUS)
    assert actual.dtype == np.int64 and actual.shape == (len(CORPUS), CONTEXT_LENGTH)
    for text, a, e in zip(CORPUS, actual, expected):
        assert a.tolist() == e.tolist(), text


def test_corpus_ids_equal_modelscope_tokenize(ours, modelscope_reference):
    expected = modelscope_tokenize(modelscope_reference, CORPUS)
    for text, a, e in zip(CORPUS, ours(CORPUS), expected):
        assert a.tolist() == e.tolist(), text


def test_corpus_tokens_before_truncation_equal_the_reference(ours, modelscope_reference):
    for text in CORPUS:
        assert ours.tokenize(text) == modelscope_reference.tokenize(text), text


def test_context_layout(ours):
    ids = ours(["猫", "", "猫" * 100])
    cls, sep = ours.vocab["[CLS]"], ours.vocab["[SEP]"]
    assert ids[0, :3].tolist() == [cls, ours.vocab["猫"], sep] and not ids[0, 3:].any()
    assert ids[1, :2].tolist() == [cls, sep] and not ids[1, 2:].any()
    # Truncated to the context: 50 tokens of text between [CLS] and [SEP].
    assert ids[2, 0] == cls and ids[2, -1] == sep and (ids[2, 1:-1] == ours.vocab["猫"]).all()
    assert ours.count_tokens("猫" * 100) == 100
    assert ours.pad_id == 0 and ours("猫").shape == (1, CONTEXT_LENGTH)


def test_another_context_length(vocab_path, cn_reference):
    tokenizer = ClipTokenizer.from_file(vocab_path, context_length=77)
    texts = ["猫" * 100, "a photo", ""]
    assert tokenizer(texts).tolist() == cn_reference.utils.tokenize(texts, context_length=77).tolist()


def _sweep_code_points():
    """Every code point of the Basic Multilingual Plane (private use and surrogates included),
    every assigned one above it, and every 61st of the rest (unassigned and private use, which
    the reference treats alike)."""
    points = list(range(0x10000))
    for cp in range(0x10000, 0x110000):
        category = unicodedata.category(chr(cp))
        if category not in ("Cn", "Co") or cp % 61 == 0:
            points.append(cp)
    return points


@pytest.mark.slow
def test_every_character_in_a_word_as_the_reference(ours, modelscope_reference):
    """Each code point between two letters, "a<c>b": cleaning, CJK spacing, lower-casing, accent
    stripping, punctuation and WordPiece all meet it, in a context that shows what it became."""
    points = _sweep_code_points()
    assert len(points) > 150_000
    for start in range(0, len(points), 4096):
        chunk = points[start:start + 4096]
        text = " ".join(f"a{chr(cp)}b" for cp in chunk)
        expected = modelscope_reference.tokenize(text)
        if ours.tokenize(text) != expected:
            wrong = next(cp for cp in chunk
                         if ours.tokenize(f"a{chr(cp)}b") != modelscope_reference.tokenize(f"a{chr(cp)}b"))
            pytest.fail(f"U+{wrong:04X} {unicodedata.name(chr(wrong), '?')}: "
                        f"{ours.tokenize(f'a{chr(wrong)}b')} != {modelscope_reference.tokenize(f'a{chr(wrong)}b')}")


# Any Unicode, with lone surrogates too; and text made of the characters labels are made of, so
# that words, punctuation and casing meet each other often.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()) | st.characters(categories=["Cs"]),
                   max_size=60)
LABEL_CHARS = st.sampled_from(list("猫狗电饭煲花田 ，。！？、（）ａＡaAzZ09-'._ΣσΑéÉİß\u0301\u200d\u3000🐱👍🏽"))
LABEL_TEXT = st.text(LABEL_CHARS | st.characters(max_codepoint=0x2FFF), max_size=80)


@settings(max_examples=400, deadline=None)
@given(st.lists(ANY_TEXT | LABEL_TEXT, min_size=1, max_size=4))
def test_generated_texts_give_the_reference_ids(ours, cn_reference, texts):
    assert ours(texts).tolist() == cn_reference.utils.tokenize(texts).tolist()


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT)
def test_generated_texts_give_the_reference_tokens(ours, modelscope_reference, text):
    assert ours.tokenize(text) == modelscope_reference.tokenize(text)


def test_a_vocabulary_without_the_special_tokens_is_refused(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n猫\n狗\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\[UNK\] \[CLS\] \[SEP\]"):
        ClipTokenizer.from_file(path)
