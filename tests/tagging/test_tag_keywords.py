"""Merging shiwu's keywords into a photo's: the user's keywords are never moved, duplicated or
taken; shiwu's own are recognised through the 识物| hierarchy; the same labels change nothing."""

from shiwu.tagging import Keywords, merge, remove


def test_merge_appends_and_keeps_order_of_what_is_not_ours():
    current = Keywords(("旅行", "2024", "家人"), ("地点|北京",), ("trip",))
    change = merge(current, ["猫", "狗"])
    assert change.after.subject == ("旅行", "2024", "家人", "猫", "狗")
    assert change.after.hierarchy == ("地点|北京", "识物|猫", "识物|狗")
    assert change.after.iptc == ("trip", "猫", "狗")
    assert change.added == ["猫", "狗"] and change.changed
    again = merge(change.after, ["猫", "狗"])
    assert not again.changed and again.after == change.after


def test_a_keyword_the_user_had_is_not_duplicated_and_not_taken_by_remove():
    current = Keywords(("猫", "旅行"), ())
    tagged = merge(current, ["猫", "狗"]).after
    assert tagged.subject == ("猫", "旅行", "狗")        # no second 猫
    assert tagged.hierarchy == ("识物|狗",)              # the user's 猫 is not claimed
    assert remove(tagged).after.subject == ("猫", "旅行")


def test_new_labels_replace_only_shiwus_old_ones_in_place():
    first = merge(Keywords(("a",), ("x|y",)), ["猫", "狗", "鸟"]).after
    second = merge(first, ["鸟", "猫", "鱼"])
    assert second.after.subject == ("a", "猫", "鸟", "鱼")  # 狗 out, 猫 and 鸟 where they were
    assert second.after.hierarchy == ("x|y", "识物|猫", "识物|鸟", "识物|鱼")
    assert second.removed == ["狗"] and second.added == ["鱼"]


def test_remove_takes_exactly_shiwus_keywords():
    tagged = Keywords(("旅行", "猫", "狗"), ("识物|猫", "地点|北京", "识物|狗", "识物"), ("trip", "猫"))
    change = remove(tagged)
    assert change.after == Keywords(("旅行",), ("地点|北京", "识物"), ("trip",))
    assert change.removed == ["猫", "狗"]
    assert not remove(change.after).changed
