"""The model file: shapes, bucketed == packed (the batching trick), safe save/load."""

import numpy as np
import torch

from mrnet.data.text import Vocab, length_buckets
from mrnet.encoder.model import MRNet, load_model, save_model


def _model(seed=0):
    torch.manual_seed(seed)
    return MRNet(vocab_size=50, word_dim=16, embed_dim=12, head_dims={"color": 5, "price": 1, "tfidf": 30})


def test_shapes_and_embedding_is_concatenated_final_states():
    model = _model()
    ids = torch.randint(2, 50, (4, 7))
    h = model(ids)
    assert h.shape == (4, 12)
    _, (h_n, _) = model.lstm(model.words(ids))
    assert torch.equal(h[:, :6], h_n[0]) and torch.equal(h[:, 6:], h_n[1])
    assert model.heads["tfidf"](h).shape == (4, 30)
    assert not model.words.weight.requires_grad  # word2vec rows frozen by default


def test_length_bucketed_batches_equal_packed_sequences():
    """Exact-length buckets (no padding) give the same h_T as pack_padded_sequence, within 1e-5."""
    model = _model(1).eval()
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, size=200)
    ids = np.zeros((200, lengths.max()), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(2, 50, size=n)
    with torch.no_grad():
        packed = model.forward_packed(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()
        bucketed = np.empty_like(packed)
        for n, idx in length_buckets(lengths).items():
            bucketed[idx] = model(torch.from_numpy(ids[idx, :n])).numpy()
    assert np.abs(packed - bucketed).max() < 1e-5


def test_word_dropout_turns_words_into_unk_in_training_only():
    """``word_dropout`` (cold start, §6): in training about p of the real words read as <unk>;
    <pad>/<unk> stay; in eval mode the title is read as it is."""
    torch.manual_seed(3)
    model = MRNet(vocab_size=50, word_dim=16, embed_dim=12, head_dims={"color": 5}, word_dropout=0.3)
    seen = []
    model.words.register_forward_hook(lambda mod, args, out: seen.append(args[0].clone()))
    ids = torch.randint(2, 50, (200, 10))
    ids[:, 0] = 1  # an <unk> stays one
    model.train()(ids)
    model.eval()(ids)
    dropped = seen[0] != ids
    assert torch.all(seen[0][dropped] == 1) and torch.all(seen[0][:, 0] == 1)
    assert 0.25 < dropped[:, 1:].float().mean() < 0.35
    assert torch.equal(seen[1], ids)


def test_save_load_roundtrip_is_self_describing_and_pickle_free(tmp_path):
    model = _model(2).eval()
    meta = {"pg": "watches", "vocab": Vocab([f"w{i}" for i in range(48)]).words,
            "config": {"word2vec": {"vector_size": 16}, "model": {"embed_dim": 12, "max_tokens": 8,
                                                                  "freeze_word_vectors": True}},
            "tasks": [{"name": "color", "active": True, "out_dim": 5},
                      {"name": "price", "active": True, "out_dim": 1},
                      {"name": "tfidf", "active": True, "out_dim": 30},
                      {"name": "brand", "active": False}]}
    uri = save_model(model, meta, str(tmp_path / "model.safetensors"))
    raw = (tmp_path / "model.safetensors").read_bytes()
    assert b"pickle" not in raw[:200] and raw[8:9] == b"{"  # safetensors: u64 length + JSON header
    loaded, loaded_meta = load_model(uri)
    assert loaded_meta["pg"] == "watches" and len(loaded_meta["vocab"]) == 50
    ids = torch.randint(2, 50, (3, 5))
    with torch.no_grad():
        assert torch.equal(model(ids), loaded(ids))


def test_load_refuses_a_foreign_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    try:
        load_model(str(tmp_path / "other.safetensors"))
    except ValueError as err:
        assert "not an mrnet model" in str(err)
    else:
        raise AssertionError("a foreign file was accepted")


def _saved(tmp_path):
    """A small saved PG model: ``tmp_path/model.safetensors``."""
    meta = {"pg": "watches", "vocab": Vocab([f"w{i}" for i in range(48)]).words,
            "config": {"word2vec": {"vector_size": 16}, "model": {"embed_dim": 12, "max_tokens": 8,
                                                                  "freeze_word_vectors": True}},
            "tasks": [{"name": "color", "active": True, "out_dim": 5}]}
    path = tmp_path / "model.safetensors"
    save_model(_model(2).eval(), meta, str(path))
    return path


def test_a_truncated_model_file_is_one_line_naming_it(tmp_path):
    """A truncated safetensors file once raised ``SafetensorError: … incomplete metadata`` without the file."""
    import pytest

    path = _saved(tmp_path)
    whole = path.read_bytes()
    for cut in (6, 300, len(whole) - 64):  # inside the length, inside the header, inside the weights
        path.write_bytes(whole[:cut])
        with pytest.raises(ValueError, match=rf"^{tmp_path}/model.safetensors: not a readable safetensors file \("):
            load_model(str(path))


def test_a_model_changed_after_publishing_is_refused_by_its_release(tmp_path):
    """A bit flipped in a released model.safetensors was loaded and used (neighbour distances moved from 0.109 to
    0.860, no message): loading through the release compares the file's SHA-256 with the version it recorded."""
    import pytest

    from mrnet.encoder.embed import model_version
    from mrnet.release.manifest import file_version, release_model

    path = _saved(tmp_path)
    manifest = {"release": "r1", "models": {"watches": {"uri": str(path), "version": model_version(str(path))}}}
    assert release_model(manifest, "watches") == str(path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # one bit of one weight
    path.write_bytes(bytes(data))
    file_version.cache_clear()
    with pytest.raises(ValueError, match=rf"^{path}: its SHA-256 starts [0-9a-f]{{12}}, where release r1 recorded"):
        release_model(manifest, "watches")
