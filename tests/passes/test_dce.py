"""Pass "dce": text in, text out, and the interpreter gives the same outputs before and after."""

from __future__ import annotations

from cimc.ir import parse_module
from cimc.passes.dce import remove_dead_ops
from cimc.testing import check_pass


def test_dead_chain_and_dead_constants_are_removed():
    src = """module {
  func @main(%x: tensor<4xf32>, %unused: tensor<2xf32>) -> (tensor<4xf32>) {
    %k = nn.constant() {value = dense<[1.0, 2.0, 3.0, 4.0] : tensor<4xf32>>} : tensor<4xf32>
    %a = nn.relu(%x) : tensor<4xf32>
    %b = nn.add(%a, %k) : tensor<4xf32>
    %c = nn.relu(%b) : tensor<4xf32>
    %y = nn.add(%x, %x) : tensor<4xf32>
    return(%y)
  }
}
"""
    check_pass(
        src,
        "dce",
        """module {
  func @main(%0: tensor<4xf32>, %1: tensor<2xf32>) -> (tensor<4xf32>) {
    %2 = nn.add(%0, %0) : tensor<4xf32>
    return(%2)
  }
}
""",
    )


def test_live_ops_and_multi_result_ops_with_one_used_result_stay():
    src = """module {
  func @main(%x: tensor<6xf32>) -> (tensor<2xf32>, tensor<6xf32>) {
    %a, %b = nn.split(%x) {axis = 0, sizes = [2, 4]} : tensor<2xf32>, tensor<4xf32>
    %r = nn.relu(%x) : tensor<6xf32>
    return(%a, %r)
  }
}
"""
    expected = """module {
  func @main(%0: tensor<6xf32>) -> (tensor<2xf32>, tensor<6xf32>) {
    %1, %2 = nn.split(%0) {axis = 0, sizes = [2, 4]} : tensor<2xf32>, tensor<4xf32>
    %3 = nn.relu(%0) : tensor<6xf32>
    return(%1, %3)
  }
}
"""
    assert check_pass(src, "dce", expected) == expected


def test_remove_dead_ops_counts_and_is_idempotent():
    src = """module {
  func @main(%x: tensor<4xf32>) -> (tensor<4xf32>) {
    %a = nn.relu(%x) : tensor<4xf32>
    %b = nn.relu(%a) : tensor<4xf32>
    %c = nn.relu(%b) : tensor<4xf32>
    return(%x)
  }
}
"""
    m = parse_module(src)
    assert remove_dead_ops(m.main.body) == 3
    assert remove_dead_ops(m.main.body) == 0
    assert [op.name for op in m.main.body.ops] == ["return"]
