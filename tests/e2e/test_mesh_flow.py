"""The mesh-flow example's geometry (examples/mesh_flow/mesh.py): the icosphere, point-to-surface
distances, ASSD/HD90 and self-intersecting faces; and its committed field compiles as an ODE."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

MESH_FLOW = Path(__file__).resolve().parents[2] / "examples" / "mesh_flow"


@pytest.fixture(scope="module")
def mesh():
    spec = importlib.util.spec_from_file_location("mesh_flow_mesh", MESH_FLOW / "mesh.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_icosphere(mesh):
    v, f = mesh.icosphere(4)
    assert v.shape == (2562, 3) and f.shape == (5120, 3)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0)
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    assert len(np.unique(e, axis=0)) == 7680  # closed: every edge in two faces, V - E + F = 2
    normals = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert (np.einsum("ij,ij->i", normals, v[f].mean(1)) > 0).all()  # outward


def test_distances_to_a_surface(mesh):
    v, f = mesh.icosphere(3)
    assert mesh.point_triangle_distance(np.array([[0.2, 0.2, 1.0], [2.0, 0.0, 0.0]]),
                                        np.zeros((2, 3)), np.array([[1.0, 0, 0]] * 2),
                                        np.array([[0, 1.0, 0]] * 2)) == pytest.approx([1.0, 1.0])
    d = mesh.surface_distances(1.05 * v, f, v, f, v)
    assd, hd90 = mesh.assd_hd90(d)
    assert assd == pytest.approx(0.05, rel=0.02) and hd90 == pytest.approx(0.05, rel=0.02)
    r = mesh.target_radius(v)
    assert 0.7 < r.min() < r.max() < 1.4


def test_self_intersecting_faces(mesh):
    v, f = mesh.icosphere(3)
    assert not mesh.self_intersecting_faces(v, f).any()
    crossed = v.copy()
    crossed[0] = -1.3 * v[0]  # its fan of faces now pierces the far side of the sphere
    hit = mesh.self_intersecting_faces(crossed, f)
    assert 0 < hit.sum() < 40 and hit[(f == 0).any(1)].any()
    pair = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.2, 0.2, -0.5], [0.2, 0.2, 0.5],
                     [0.9, 0.9, 0.0]], float)
    assert mesh.self_intersecting_faces(pair, np.array([[0, 1, 2], [3, 4, 5]])).all()


def test_the_committed_field_wraps_as_an_ode():
    with np.load(MESH_FLOW / "template.npz") as z:
        x0 = z["x"]
    from cimc.frontend.ode import wrap_ode
    from cimc.frontend.onnx import import_onnx
    from cimc.ir import run

    module = wrap_ode(import_onnx(MESH_FLOW / "field.onnx"), "t1=1.0,step=fixed:2")
    x1 = run(module, {"x": x0})["x"]
    assert x1.shape == x0.shape and np.isfinite(x1).all()
