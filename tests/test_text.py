import numpy as np

from mrnet.data.text import PAD_ID, UNK_ID, Vocab, length_buckets, tokenize


def test_tokenize_normalizes_case_unicode_and_punctuation():
    assert tokenize("Turtle Check MEN Navy-Blue Shirt") == ["turtle", "check", "men", "navy", "blue", "shirt"]
    assert tokenize("Women's Oil 2.5 L (500ml)") == ["women's", "oil", "2.5", "l", "500ml"]
    assert tokenize("ＡＢＣ １２３") == ["abc", "123"]  # NFKC folds full-width characters
    assert tokenize("") == [] and tokenize(None) == []


def test_vocab_ids_unknown_fallback_and_truncation():
    vocab = Vocab(["shirt", "men"])
    assert vocab.ids("Men Shirt Zebra", max_tokens=10) == [3, 2, UNK_ID]
    assert vocab.ids("!!!", max_tokens=10) == [UNK_ID]  # a title with no token is one <unk>
    assert vocab.ids("men men men", max_tokens=2) == [3, 3]
    ids, lengths = vocab.encode_many(["men", "men shirt"], max_tokens=8)
    assert ids.tolist() == [[3, PAD_ID], [3, 2]] and lengths.tolist() == [1, 2]


def test_length_buckets_partition_rows_by_exact_length():
    lengths = np.array([3, 1, 3, 2, 1, 3])
    buckets = length_buckets(lengths)
    assert {k: sorted(v.tolist()) for k, v in buckets.items()} == {1: [1, 4], 2: [3], 3: [0, 2, 5]}
