"""Sentence splitting with Punkt and no downloaded data."""

from distill.text import first_sentence, has_complete_first_sentence, is_complete, split_sentences


def test_abbreviations_and_decimals_do_not_split():
    text = 'Mr. Smith flew to the U.S. on Monday. He paid 3.5 million dollars! Then "he left." And then'
    assert split_sentences(text) == ["Mr. Smith flew to the U.S. on Monday.", "He paid 3.5 million dollars!",
                                     'Then "he left."', "And then"]


def test_complete_sentence_rules():
    assert is_complete("It rained.") and is_complete('He said "no."') and is_complete("Why?")
    assert not is_complete("It rained")  # no end mark
    assert not is_complete("A.")  # under 3 characters
    assert not is_complete("No.\nYes.")  # a newline


def test_first_sentence_and_stop_rule():
    assert first_sentence(" The bank raised rates. It said more") == "The bank raised rates."
    assert first_sentence(" The bank raised rates and") is None
    assert has_complete_first_sentence(" The bank raised rates. It")
    assert not has_complete_first_sentence(" The bank raised rates.")  # the next sentence has not started yet
    assert not has_complete_first_sentence(" Mr. Smith")
