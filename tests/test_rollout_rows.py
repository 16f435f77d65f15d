"""r1kit.rollout.rows: the decode loop's per-row state, compacted as one object."""

from dataclasses import fields

import torch

from r1kit.rollout.rows import FINISH_REASONS, Rows


def _rows(B=5, M=4):
    """Rows whose every field holds values that name their row (row r: r * 10 + column)."""
    rows = Rows.start(torch.arange(B) + 100, M)
    for s in range(M):
        rows.record(s, torch.arange(B) * 10 + s, -(torch.arange(B) * 10 + s).float(), torch.tensor([], dtype=torch.long))
    rows.out = [7 * r for r in range(B)]
    rows.length = torch.arange(B) % M + 1
    rows.reason = torch.arange(B) % len(FINISH_REASONS)
    rows.alive = torch.arange(B) % 2 == 0
    return rows


def test_select_compacts_every_field_with_the_same_rows():
    rows = _rows()
    keep = [4, 1, 3]
    sub = rows.select(keep)
    assert len(sub) == 3
    for f in fields(Rows):  # every field, so a field added later cannot be left out of compaction
        full, part = getattr(rows, f.name), getattr(sub, f.name)
        if isinstance(full, torch.Tensor):
            assert part.shape[0] == len(keep) and part.shape[1:] == full.shape[1:], f.name
            assert torch.equal(part, full[keep]), f.name
        else:
            assert part == [full[r] for r in keep], f.name
    assert sub.tokens[:, 0].tolist() == [40, 10, 30] and sub.pos.tolist() == [104, 101, 103]
    sub.pos += 1  # the selection owns its tensors
    assert rows.pos.tolist() == [100, 101, 102, 103, 104]


def test_select_then_emit_returns_results_under_the_output_index():
    rows = _rows()
    sub = rows.select([3, 0])
    results = [None] * 22
    sub.emit([0, 1], results)
    # row 3: output 21, length 4, reason 0 ("length"); row 0: output 0, length 1, reason 0
    assert results[21] == ([30, 31, 32, 33], [-30.0, -31.0, -32.0, -33.0], "length")
    assert results[0] == ([0], [-0.0], "length")
    assert sum(r is not None for r in results) == 2


def test_record_eos_and_stop_finish_rows():
    rows = Rows.start(torch.zeros(4, dtype=torch.long), 6)
    eos = torch.tensor([9])
    rows.record(0, torch.tensor([1, 9, 2, 3]), torch.zeros(4), eos)
    rows.record(1, torch.tensor([9, 9, 2, 3]), torch.zeros(4), eos)  # row 1 already finished: stays at 1
    rows.stop([(2, 2)])
    assert rows.alive.tolist() == [False, False, False, True]
    assert rows.length.tolist() == [2, 1, 2, 6]
    assert [FINISH_REASONS[r] for r in rows.reason.tolist()] == ["eos", "eos", "stop", "length"]
    results = [None] * 4
    rows.select([2, 3]).emit([0], results)
    assert results[2] == ([2, 2], [0.0, 0.0], "stop") and results[3] is None
