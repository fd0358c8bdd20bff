from pipeline.core import bounds

CPU = {"peak_vram_allocated_gib": 0.0, "peak_rss_gib": 0.8, "first_loss": 7.6, "final_loss": 7.5}
GPU = {"peak_vram_allocated_gib": 24.5, "peak_vram_reserved_gib": 25.3, "peak_rss_gib": 9.0,
       "first_loss": 3.0, "final_loss": 2.7}


def test_memory_bounds_apply_to_the_device_that_was_used():
    b = {"peak_vram_gib": 20, "peak_rss_gib": 1.0}
    assert [(v.bound, v.ok) for v in bounds.evaluate(b, CPU)] == [("peak_rss_gib", True)]
    assert [(v.bound, v.ok) for v in bounds.evaluate(b, GPU)] == [("peak_vram_gib", False)]


def test_a_broken_bound_is_one_line_with_limit_and_value():
    (v,) = bounds.evaluate({"peak_vram_gib": 20}, GPU)
    assert v.line("configs/lora.yaml") == "configs/lora.yaml: bound peak_vram_gib FAILED: limit <= 20 GiB, value 24.5"


def test_final_loss_range_and_max():
    assert [v.ok for v in bounds.evaluate({"final_loss": [2.0, 3.0]}, GPU)] == [True]
    assert [v.ok for v in bounds.evaluate({"final_loss": [2.8, 3.0]}, GPU)] == [False]
    assert [v.ok for v in bounds.evaluate({"final_loss": 2.5}, GPU)] == [False]


def test_loss_decrease_is_relative_to_the_first_loss():
    assert [v.ok for v in bounds.evaluate({"loss_decrease": 0.05}, GPU)] == [True]   # 10% down
    assert [v.ok for v in bounds.evaluate({"loss_decrease": 0.15}, GPU)] == [False]


def test_unmeasured_value_fails_rather_than_passes():
    (v,) = bounds.evaluate({"final_loss": 5.0}, {"peak_rss_gib": 1.0})
    assert not v.ok and "not measured" in v.line("c")
