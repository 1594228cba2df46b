import re

import pytest

from shiwu.labels import LabelSet

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_imagenet_table_has_1000_unique_chinese_names():
    labels = LabelSet.imagenet()
    assert len(labels) == 1000 and len(labels.en) == 1000
    assert all(name.strip() == name and name for name in labels.zh)
    assert all(CJK.search(name) for name in labels.zh), [n for n in labels.zh if not CJK.search(n)]
    duplicates = {n for n in labels.zh if labels.zh.count(n) > 1}
    assert not duplicates
    assert all(name for name in labels.en)
    assert not any("\t" in n or "\n" in n for n in labels.zh + labels.en)


def test_names_a_chinese_speaker_uses_and_twice_named_classes_are_told_apart():
    labels = LabelSet.imagenet()
    assert labels.zh[281] == "虎斑猫" and labels.en[281] == "tabby cat"
    assert labels.zh[207] == "金毛寻回犬"
    assert labels.zh[967] == "浓缩咖啡"
    assert labels.zh[335] == "狐松鼠"
    # ImageNet has "crane" the bird (134) and "crane" the machine (517)
    assert labels.zh[134] != labels.zh[517]
    assert "鹤" in labels.zh[134] and "起重机" == labels.zh[517]


def test_tsv_parser_rejects_gaps_and_reads_optional_english():
    text = "0\t猫\tcat\n1\t狗\n"
    labels = LabelSet.from_tsv_text(text, "x.tsv")
    assert labels.zh == ("猫", "狗") and labels.en == ("cat", "")
    with pytest.raises(ValueError, match="expected index 1"):
        LabelSet.from_tsv_text("0\t猫\n2\t狗\n", "x.tsv")
    with pytest.raises(ValueError, match="not a number"):
        LabelSet.from_tsv_text("a\t猫\n", "x.tsv")
