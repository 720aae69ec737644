"""The serialized string format, written out by hand (the model card's prompt example)."""

from __future__ import annotations

import pytest

from oasst_data.conversation import Role, Source, Split, Thread, Turn
from oasst_data.serialize import MARKERS, SpecialText, format_inference, format_training, format_turn


def test_markers_are_in_the_fixed_order_that_gives_ids_50277_to_50281():
    assert MARKERS == ("<|prompter|>", "<|assistant|>", "<|system|>", "<|prefix_begin|>", "<|prefix_end|>")


def test_training_and_inference_forms():
    turns = [Turn(Role.PROMPTER, "What is a meme?"), Turn(Role.ASSISTANT, "A unit of culture.")]
    assert format_training(turns) == "<|prompter|>What is a meme?<|endoftext|><|assistant|>A unit of culture.<|endoftext|>"
    assert format_inference(turns[:1]) == "<|prompter|>What is a meme?<|endoftext|><|assistant|>"
    follow_up = turns + [Turn(Role.PROMPTER, "Example?")]
    assert format_inference(follow_up).endswith("<|prompter|>Example?<|endoftext|><|assistant|>")
    with pytest.raises(ValueError):
        format_inference(turns)  # ends with the assistant: nothing to answer


def test_text_is_kept_byte_for_byte_between_the_markers():
    turns = [Turn(Role.PROMPTER, "  Hi\n\n"), Turn(Role.ASSISTANT, "\tHello \r\n")]
    assert format_training(turns) == "<|prompter|>  Hi\n\n<|endoftext|><|assistant|>\tHello \r\n<|endoftext|>"


def test_another_tokenizers_eos_closes_every_turn():
    turns = [Turn(Role.PROMPTER, "Q"), Turn(Role.ASSISTANT, "A"), Turn(Role.PROMPTER, "Q2")]
    assert format_training(turns[:2], eos="</s>") == "<|prompter|>Q</s><|assistant|>A</s>"
    assert format_inference(turns, eos="</s>") == "<|prompter|>Q</s><|assistant|>A</s><|prompter|>Q2</s><|assistant|>"
    assert format_turn(Role.SYSTEM, "S", eos="</s>") == "<|system|>S</s>"


def test_an_empty_conversation_has_no_inference_prompt():
    with pytest.raises(ValueError, match="must end with a prompter turn"):
        format_inference([])


def test_system_message_comes_first():
    thread = Thread("a2", "t", Source.OASST, "en", Split.TRAIN, (Turn(Role.PROMPTER, "Hi"), Turn(Role.ASSISTANT, "Hello")), system="Be kind.")
    assert thread.text() == "<|system|>Be kind.<|endoftext|><|prompter|>Hi<|endoftext|><|assistant|>Hello<|endoftext|>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("plain", False), ("a <| b", False), ("say <|endoftext|>", True), ("<|prefix_end|>", True), ("<|assistant|>x", True)],
)
def test_special_text_knows_the_markers_and_eos(text, expected):
    assert SpecialText()(text) is expected


@pytest.mark.parametrize(("text", "expected"), [("a </s> b", True), ("a <|endoftext|> b", False), ("<|prompter|>", True), ("plain", False)])
def test_special_text_of_another_tokenizer(text, expected):
    assert SpecialText((*MARKERS, "</s>"))(text) is expected


def test_thread_validates_its_shape():
    p, a = Turn(Role.PROMPTER, "q"), Turn(Role.ASSISTANT, "a")
    with pytest.raises(ValueError, match="at least two"):
        Thread("x", "t", Source.OASST, "en", Split.TRAIN, (p,))
    with pytest.raises(ValueError, match="expected prompter"):
        Thread("x", "t", Source.OASST, "en", Split.TRAIN, (a, p))
    with pytest.raises(ValueError, match="end with an assistant"):
        Thread("x", "t", Source.OASST, "en", Split.TRAIN, (p, a, p))
