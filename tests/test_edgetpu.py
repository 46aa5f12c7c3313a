"""The Edge TPU mapping rules, on op lists built by hand (no TFLite needed)."""

from edgemm import edgetpu
from edgemm.edgetpu import Op, Tensor

I8 = Tensor("int8", (1, 8, 8, 4), False)
W = Tensor("int8", (4, 3, 3, 4), True)
B = Tensor("int32", (4,), True)


def test_all_int8_supported_ops_map():
    ops = [Op(0, "CONV_2D", (I8, W, B), (I8,)), Op(1, "MAX_POOL_2D", (I8,), (I8,))]
    verdicts = edgetpu.analyze(ops)
    assert all(v.mapped for v in verdicts)
    assert edgetpu.summary(verdicts)["fully_mappable"]


def test_graph_is_cut_at_the_first_unmapped_op():
    f32 = Tensor("float32", (1, 8, 8, 4), False)
    ops = [
        Op(0, "CONV_2D", (I8, W, B), (I8,)),
        Op(1, "DEQUANTIZE", (I8,), (f32,)),
        Op(2, "CONV_2D", (I8, W, B), (I8,)),
    ]
    verdicts = edgetpu.analyze(ops)
    assert [v.mapped for v in verdicts] == [True, False, False]
    assert verdicts[1].status == "Operation not supported by the Edge TPU"
    assert verdicts[2].status == edgetpu.AFTER_CUT
    s = edgetpu.summary(verdicts)
    assert s["first_unmapped"]["op"] == "DEQUANTIZE" and s["on_cpu"] == 2
    assert "Number of operations that will run on CPU: 2" in edgetpu.format_log(verdicts)


def test_float_dynamic_and_high_rank_tensors_do_not_map():
    float_conv = Op(0, "CONV_2D", (Tensor("float32", (1, 8, 8, 4), False), W, B), (I8,))
    dynamic = Op(0, "RESHAPE", (Tensor("int8", (-1, 8), False),), (I8,))
    rank5 = Op(0, "ADD", (Tensor("int8", (1, 2, 3, 4, 5), False),), (I8,))
    assert "unsupported type float32" in edgetpu.op_problem(float_conv)
    assert "dynamic size" in edgetpu.op_problem(dynamic)
    assert "more than 3 dimensions" in edgetpu.op_problem(rank5)
