"""The index's pre-classification grid: which fences each grid cell meets, and how.

Every fence is rasterised into a uniform longitude/latitude grid. Each cell it meets gets one
entry with a *kind* that says how a position in that cell is decided:

- FULL: the cell lies wholly inside the fence; no test at all.
- HALF: exactly one boundary segment crosses the cell and no vertex lies in it, so within the
  cell the fence is one side of that segment's line: one cross product decides.
- AND / OR: one vertex lies in the cell with its two segments: inside is the wedge left of
  both lines (convex corner, AND) or of either line (reflex corner, OR).
- EXACT: anything more tangled (several vertices, several boundary pieces): GEOS decides.

Rings are oriented (exteriors counter-clockwise, holes clockwise) so that the fence is always
on the left of a segment. Positions within a few nanometres of a segment's line are handed to
GEOS too, so the fast path never disagrees with the exact test on a rounding error. Cells are
looked up through fixed blocks of BLOCK x BLOCK cells: a short sorted array of occupied
blocks, then a dense table of entry ranges within each block (no search over millions of
cells).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray

FULL, EXACT, HALF, AND, OR = 0, 1, 2, 3, 4
BLOCK_BITS = 4
BLOCK = 1 << BLOCK_BITS
EPS_CELL = 1e-9
"""Geometry this close to a cell edge or corner (in cells) is treated as touching both sides."""

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Raster:
    """One fence's entries over its window of w x h cells (flat index = row * w + col)."""

    flat: IntArray
    kind: NDArray[np.int8]
    line1: IntArray
    """Segment (index into `segments`) of HALF/AND/OR entries, else -1."""
    line2: IntArray
    segments: FloatArray
    """(n, 4): ax, ay, dx, dy in degrees; the fence lies left of a -> a + d."""


def rasterise(zone: shapely.Geometry, origin: tuple[float, float],  # noqa: PLR0915
              cell: tuple[float, float], shape: tuple[int, int]) -> Raster:
    """Classify every cell of the window that `zone` meets (FULL, HALF, AND, OR or EXACT)."""
    cdx, cdy = cell
    w, h = shape
    rings = shapely.get_rings(shapely.get_parts(shapely.orient_polygons(zone)))
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    start = np.flatnonzero(ring[:-1] == ring[1:])
    a, b = xy[start], xy[start + 1]
    nseg = start.size
    seg_ring = ring[start]
    first = np.r_[True, seg_ring[1:] != seg_ring[:-1]]
    last = np.r_[seg_ring[1:] != seg_ring[:-1], True]
    prev = np.arange(nseg) - 1
    prev[first] = np.flatnonzero(last)

    ga = np.column_stack([(a[:, 0] - origin[0]) / cdx, (a[:, 1] - origin[1]) / cdy])
    gb = np.column_stack([(b[:, 0] - origin[0]) / cdx, (b[:, 1] - origin[1]) / cdy])

    def flat_of(gx: FloatArray, gy: FloatArray) -> IntArray:
        r = np.clip(np.floor(gy), 0, h - 1).astype(np.int64)
        c = np.clip(np.floor(gx), 0, w - 1).astype(np.int64)
        return r * w + c

    seg_ids = np.arange(nseg)
    cells: list[IntArray] = []
    segs: list[IntArray] = []
    vcells: list[IntArray] = []
    vids: list[IntArray] = []
    exact: list[IntArray] = [np.empty(0, dtype=np.int64)]
    # Vertices; one within eps of a cell edge also counts in the cells beside it.
    vc = flat_of(ga[:, 0], ga[:, 1])
    vcells.append(vc)
    vids.append(seg_ids)
    cells += [vc, flat_of(gb[:, 0], gb[:, 1]), vc]
    segs += [seg_ids, seg_ids, prev]
    fx, fy = ga[:, 0] - np.floor(ga[:, 0]), ga[:, 1] - np.floor(ga[:, 1])
    edgy = np.flatnonzero((fx < EPS_CELL) | (fx > 1 - EPS_CELL)
                          | (fy < EPS_CELL) | (fy > 1 - EPS_CELL))
    for dx in (-EPS_CELL, EPS_CELL):
        for dy in (-EPS_CELL, EPS_CELL):
            vc = flat_of(ga[edgy, 0] + dx, ga[edgy, 1] + dy)
            vcells.append(vc)
            vids.append(edgy)
            cells += [vc, vc]
            segs += [edgy, prev[edgy]]
    # Grid-line crossings: a segment enters every cell it visits across a grid line.
    for axis in (0, 1):
        u0, u1 = ga[:, axis], gb[:, axis]
        v0, v1 = ga[:, 1 - axis], gb[:, 1 - axis]
        lo = np.floor(np.minimum(u0, u1)).astype(np.int64) + 1
        hi = np.floor(np.maximum(u0, u1)).astype(np.int64)
        n = np.maximum(hi - lo + 1, 0)
        total = int(n.sum())
        if total == 0:
            continue
        seg = np.repeat(seg_ids, n)
        k = lo[seg] + np.arange(total) - np.repeat(np.cumsum(n) - n, n)
        t = (k - u0[seg]) / (u1[seg] - u0[seg])
        v = v0[seg] + t * (v1[seg] - v0[seg])
        kf = k.astype(np.float64)
        frac = v - np.floor(v)
        # Through (or within eps of) a grid corner: mark the cells around it, decide exactly.
        corner = np.flatnonzero((frac < EPS_CELL) | (frac > 1 - EPS_CELL))
        for du in (-0.5, 0.5):
            fc = flat_of(kf + du, v) if axis == 0 else flat_of(v, kf + du)
            cells.append(fc)
            segs.append(seg)
            for dv in (-EPS_CELL, EPS_CELL):
                vc_ = v[corner] + dv
                fc = flat_of(kf[corner] + du, vc_) if axis == 0 else flat_of(vc_, kf[corner] + du)
                cells.append(fc)
                segs.append(seg[corner])
                exact.append(fc)
    pair = np.unique(np.concatenate(cells) * nseg + np.concatenate(segs))
    pcell, pseg = np.divmod(pair, nseg)
    vpair = np.unique(np.concatenate(vcells) * nseg + np.concatenate(vids))
    vcell, vid = np.divmod(vpair, nseg)

    size = w * h
    nsegs = np.bincount(pcell, minlength=size)
    nverts = np.bincount(vcell, minlength=size)
    forced = np.zeros(size, dtype=bool)
    forced[np.concatenate(exact)] = True
    boundary = np.flatnonzero(nsegs)
    first_pair = np.searchsorted(pcell, boundary)
    s_lo = pseg[first_pair]
    s_hi = pseg[np.minimum(first_pair + 1, pseg.size - 1)]
    nv, ns = nverts[boundary], nsegs[boundary]
    kind = np.full(boundary.size, EXACT, dtype=np.int8)
    line1 = np.full(boundary.size, -1, dtype=np.int64)
    line2 = np.full(boundary.size, -1, dtype=np.int64)
    d = b - a
    nonzero = (d[:, 0] != 0) | (d[:, 1] != 0)

    half = (nv == 0) & (ns == 1) & nonzero[s_lo]
    kind[half] = HALF
    line1[half] = s_lo[half]

    one_vertex = np.flatnonzero((nv == 1) & (ns == 2))
    if one_vertex.size:
        k = vid[np.searchsorted(vcell, boundary[one_vertex])]
        pk = prev[k]
        wedge = (((s_lo[one_vertex] == pk) & (s_hi[one_vertex] == k))
                 | ((s_lo[one_vertex] == k) & (s_hi[one_vertex] == pk)))
        wedge &= nonzero[k] & nonzero[pk] & (pk != k)
        sel = one_vertex[wedge]
        k, pk = k[wedge], pk[wedge]
        turn = d[pk, 0] * d[k, 1] - d[pk, 1] * d[k, 0]
        kind[sel] = np.where(turn >= 0, AND, OR).astype(np.int8)
        line1[sel], line2[sel] = pk, k
    kind[forced[boundary]] = EXACT
    line1[kind == EXACT] = -1
    line2[kind == EXACT] = -1

    # Cells the boundary does not touch: runs along each row lie wholly on one side.
    free = (nsegs == 0).reshape(h, w)
    before = np.zeros_like(free)
    before[:, 1:] = free[:, :-1]
    run_start = free & ~before
    sr, sc = np.nonzero(run_start)
    inside = shapely.intersects_xy(zone, origin[0] + (sc + 0.5) * cdx,
                                   origin[1] + (sr + 0.5) * cdy)
    if inside.size:
        run = np.cumsum(run_start.ravel()) - 1
        full = np.flatnonzero(free.ravel() & inside[np.maximum(run, 0)])
    else:
        full = np.empty(0, dtype=np.int64)
    return Raster(
        flat=np.concatenate([boundary, full]),
        kind=np.concatenate([kind, np.full(full.size, FULL, dtype=np.int8)]),
        line1=np.concatenate([line1, np.full(full.size, -1, dtype=np.int64)]),
        line2=np.concatenate([line2, np.full(full.size, -1, dtype=np.int64)]),
        segments=np.column_stack([a, d]),
    )


def side_tests(kind: NDArray[np.int8], lines: tuple[NDArray[np.integer], NDArray[np.integer]],
               segments: FloatArray,
               *, px: FloatArray, py: FloatArray, tol_deg: float,
               ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(inside, undecided) of HALF/AND/OR candidates; undecided ones go to the exact test."""
    l1, l2 = lines
    s1 = segments[l1]
    v1 = s1[:, 2] * (py - s1[:, 1]) - s1[:, 3] * (px - s1[:, 0])
    # |v| is |d| times the signed distance; a point this close to the line is left to GEOS.
    amb = np.abs(v1) <= tol_deg * (np.abs(s1[:, 2]) + np.abs(s1[:, 3]))
    inside = v1 >= 0
    wedge = np.flatnonzero(kind != HALF)
    if wedge.size:
        s2 = segments[l2[wedge]]
        v2 = s2[:, 2] * (py[wedge] - s2[:, 1]) - s2[:, 3] * (px[wedge] - s2[:, 0])
        amb[wedge] |= np.abs(v2) <= tol_deg * (np.abs(s2[:, 2]) + np.abs(s2[:, 3]))
        in2 = v2 >= 0
        is_and = kind[wedge] == AND
        inside[wedge] = np.where(is_and, inside[wedge] & in2, inside[wedge] | in2)
    return inside, amb
