"""Meshes for the surface-flow example, with numpy only: the icosphere template, the star-shaped
target surface, and the metrics of a deformed mesh (docs/ode.md).

- ASSD: the mean of the symmetric point-to-surface distances, the deformed mesh's vertices to the
  target surface and the target's sample points to the deformed mesh, pooled;
- HD90: the 90th percentile of the same pooled distances;
- SIF: the share of faces that intersect another face of the same mesh (faces that share a
  vertex are neighbours, not intersections).

Point-to-surface distances are exact point-to-triangle distances to the triangles around the
nearest vertices (``NEAR``): exact wherever the closest point lies on a triangle next to one of
them, which holds for the smooth meshes here.
"""

from __future__ import annotations

import numpy as np

NEAR = 4  # nearest vertices whose triangles are searched for the closest point
CHUNK = 256  # query points per block of brute-force distances


# ----------------------------------------------------------------------------- meshes


def icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertices on the unit sphere (float64 ``[V, 3]``) and faces (int32 ``[F, 3]``, outward
    counter-clockwise) of an icosahedron subdivided ``subdivisions`` times: 10·4^s + 2 vertices
    (2,562 at s = 4)."""
    p = (1 + 5 ** 0.5) / 2
    v = [(-1, p, 0), (1, p, 0), (-1, -p, 0), (1, -p, 0), (0, -1, p), (0, 1, p), (0, -1, -p),
         (0, 1, -p), (p, 0, -1), (p, 0, 1), (-p, 0, -1), (-p, 0, 1)]
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4),
         (11, 10, 2), (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8),
         (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [np.array(x, np.float64) / np.linalg.norm(x) for x in v]
    faces = f
    def midpoint(a: int, b: int, mid: dict[tuple[int, int], int]) -> int:
        key = (min(a, b), max(a, b))
        if key not in mid:
            m = verts[a] + verts[b]
            verts.append(m / np.linalg.norm(m))
            mid[key] = len(verts) - 1
        return mid[key]

    for _ in range(subdivisions):
        mid: dict[tuple[int, int], int] = {}
        new = []
        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b, mid), midpoint(b, c, mid), midpoint(c, a, mid)
            new += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new
    return np.array(verts), np.array(faces, np.int32)


def target_radius(u: np.ndarray) -> np.ndarray:
    """The star-shaped target: radius ``r(u)`` in each unit direction ``u`` ``[..., 3]``: a
    sphere with six rounded lobes along the axes and a ridge around the z axis."""
    x, y, z = u[..., 0], u[..., 1], u[..., 2]
    lobes = x**4 + y**4 + z**4 - 0.6
    ridge = np.cos(4 * np.arctan2(y, x)) * (1 - z**2)
    return 1.0 + 0.45 * lobes + 0.12 * ridge


def target_mesh(subdivisions: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The target surface as a fine mesh: an icosphere's vertices moved to ``target_radius``."""
    u, faces = icosphere(subdivisions)
    return u * target_radius(u)[:, None], faces


# ----------------------------------------------------------------------------- distances


def _nearest_vertices(points: np.ndarray, verts: np.ndarray, k: int) -> np.ndarray:
    """Indices ``[P, k]`` of the ``k`` vertices nearest each point (brute force, in blocks)."""
    out = np.empty((len(points), k), np.int64)
    vv = np.einsum("ij,ij->i", verts, verts)
    for a in range(0, len(points), CHUNK):
        p = points[a:a + CHUNK]
        d = vv[None, :] - 2 * p @ verts.T
        out[a:a + CHUNK] = np.argpartition(d, k - 1, axis=1)[:, :k]
    return out


def _vertex_faces(faces: np.ndarray, n: int) -> np.ndarray:
    """The faces around each vertex, ``[n, most]``, padded with -1."""
    flat = faces.ravel()
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=n)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(flat)) - np.repeat(starts, counts)
    out = np.full((n, counts.max()), -1, np.int64)
    out[flat[order], rank] = order // 3
    return out


def point_triangle_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
                            ) -> np.ndarray:
    """Distance from each point ``p`` ``[M, 3]`` to the triangle ``(a, b, c)`` (each ``[M, 3]``):
    the closest point on the triangle by its Voronoi regions (Ericson, Real-Time Collision
    Detection, 5.1.5), vectorised."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v, w = vb / denom, vc / denom
        q = a + ab * v[:, None] + ac * w[:, None]  # inside the face
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    regions = [
        (d1 <= 0) & (d2 <= 0), (d3 >= 0) & (d4 <= d3), (d6 >= 0) & (d5 <= d6),
        (vc <= 0) & (d1 >= 0) & (d3 <= 0), (vb <= 0) & (d2 >= 0) & (d6 <= 0),
        (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),
    ]
    points = [a, b, c, a + ab * t_ab[:, None], a + ac * t_ac[:, None],
              b + (c - b) * t_bc[:, None]]
    for mask, pt in zip(reversed(regions), reversed(points), strict=True):
        q = np.where(mask[:, None], pt, q)
    return np.linalg.norm(p - q, axis=-1)


def point_mesh_distance(points: np.ndarray, verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Distance from each point to the mesh (see the module docstring)."""
    near = _nearest_vertices(points, verts, NEAR)
    cand = _vertex_faces(faces, len(verts))[near].reshape(len(points), -1)
    pi, col = np.nonzero(cand >= 0)
    fi = cand[pi, col]
    tri = verts[faces[fi]]
    d = point_triangle_distance(points[pi], tri[:, 0], tri[:, 1], tri[:, 2])
    best = np.full(len(points), np.inf)
    np.minimum.at(best, pi, d)
    return best


def surface_distances(verts: np.ndarray, faces: np.ndarray, target_verts: np.ndarray,
                      target_faces: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """The pooled symmetric distances: the mesh's vertices to the target surface, and the
    target's ``samples`` (points on it) to the mesh."""
    there = point_mesh_distance(verts, target_verts, target_faces)
    back = point_mesh_distance(samples, verts, faces)
    return np.concatenate([there, back])


def assd_hd90(distances: np.ndarray) -> tuple[float, float]:
    return float(np.mean(distances)), float(np.percentile(distances, 90))


# ----------------------------------------------------------------------------- self-intersections


def _segment_hits_triangle(p0: np.ndarray, p1: np.ndarray, a: np.ndarray, b: np.ndarray,
                           c: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Whether each segment ``p0 -> p1`` crosses the triangle ``(a, b, c)`` (Moller-Trumbore
    with the ray parameter in [0, 1]; segments in the triangle's plane count as missing)."""
    d = p1 - p0
    e1, e2 = b - a, c - a
    h = np.cross(d, e2)
    det = (e1 * h).sum(-1)
    ok = np.abs(det) > eps
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = p0 - a
    u = (s * h).sum(-1) * inv
    q = np.cross(s, e1)
    v = (d * q).sum(-1) * inv
    t = (e2 * q).sum(-1) * inv
    return ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t >= 0) & (t <= 1)


def self_intersecting_faces(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """A boolean per face: does it intersect another face that shares no vertex with it? Two
    triangles intersect when an edge of one crosses the other. Candidate pairs are those whose
    bounding spheres overlap."""
    tri = verts[faces]
    centre = tri.mean(1)
    radius = np.sqrt(((tri - centre[:, None]) ** 2).sum(-1).max(1))
    cc = (centre * centre).sum(-1)
    hit = np.zeros(len(faces), bool)
    for a in range(0, len(faces), CHUNK):
        d2 = cc[a:a + CHUNK, None] + cc[None] - 2 * centre[a:a + CHUNK] @ centre.T
        close = d2 <= (radius[a:a + CHUNK, None] + radius[None]) ** 2 * (1 + 1e-9) + 1e-12
        i, j = np.nonzero(close)
        i = i + a
        keep = i < j
        i, j = i[keep], j[keep]
        shared = (faces[i][:, :, None] == faces[j][:, None, :]).any((1, 2))
        i, j = i[~shared], j[~shared]
        if not len(i):
            continue
        crossed = np.zeros(len(i), bool)
        for x, y in ((i, j), (j, i)):
            for e in range(3):
                p0, p1 = tri[x, e], tri[x, (e + 1) % 3]
                crossed |= _segment_hits_triangle(p0, p1, tri[y, 0], tri[y, 1], tri[y, 2])
        hit[i[crossed]] = True
        hit[j[crossed]] = True
    return hit
