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

    flat: NDArray[np.int32]
    kind: NDArray[np.int8]
    line1: NDArray[np.int32]
    """Segment (index into `segments`) of HALF/AND/OR entries, else -1."""
    line2: NDArray[np.int32]
    segments: FloatArray
    """(n, 4): ax, ay, dx, dy in degrees; the fence lies left of a -> a + d."""


def rasterise(zone: shapely.Geometry, origin: tuple[float, float],
              cell: tuple[float, float], shape: tuple[int, int]) -> Raster:
    """Classify every cell of the window that `zone` meets (FULL, HALF, AND, OR or EXACT)."""
    return rasterise_many(np.asarray([zone], dtype=object), np.asarray([origin], dtype=float),
                          cell, np.asarray([shape], dtype=np.int64))[0]


def _unique_sorted(x: IntArray) -> tuple[IntArray, IntArray, IntArray]:
    """Distinct values of a sorted array, the index of each one's first copy, and counts.

    (numpy's hash-based `unique` is several times slower on these arrays of int64 keys.)
    """
    if x.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    first = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    counts = np.diff(np.r_[first, x.size])
    return x[first], first, counts


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


# One vectorised pipeline over shared arrays; splitting it would only pass them around.
def rasterise_many(zones: NDArray[np.object_], origins: FloatArray,  # noqa: PLR0915
                   cell: tuple[float, float], shapes: IntArray) -> list[Raster]:
    """`rasterise` for many zones in one pass of vectorised work (same result per zone).

    Each zone keeps its own window (origin and w x h shape); the windows are laid end to end
    in one flat cell space so that every step runs once for all of them.
    """
    n = len(zones)
    if n == 0:
        return []
    cdx, cdy = cell
    ws, hs = shapes[:, 0].astype(np.int64), shapes[:, 1].astype(np.int64)
    size = ws * hs
    base = np.cumsum(size) - size
    parts, part_zone = shapely.get_parts(shapely.orient_polygons(zones), return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    xy, coord_ring = shapely.get_coordinates(rings, return_index=True)
    start = np.flatnonzero(coord_ring[:-1] == coord_ring[1:])
    a, b = xy[start], xy[start + 1]
    nseg = start.size
    seg_ring = coord_ring[start]
    seg_zone = part_zone[ring_part[seg_ring]]
    first = np.r_[True, seg_ring[1:] != seg_ring[:-1]]
    last = np.r_[seg_ring[1:] != seg_ring[:-1], True]
    prev = np.arange(nseg) - 1
    prev[first] = np.flatnonzero(last)
    ox, oy = origins[seg_zone, 0], origins[seg_zone, 1]
    ga = np.column_stack([(a[:, 0] - ox) / cdx, (a[:, 1] - oy) / cdy])
    gb = np.column_stack([(b[:, 0] - ox) / cdx, (b[:, 1] - oy) / cdy])

    def flat_of(gx: FloatArray, gy: FloatArray, z: IntArray) -> IntArray:
        r = np.clip(np.floor(gy), 0, hs[z] - 1).astype(np.int64)
        c = np.clip(np.floor(gx), 0, ws[z] - 1).astype(np.int64)
        return np.asarray(base[z] + r * ws[z] + c, dtype=np.int64)

    seg_ids = np.arange(nseg)
    cells: list[IntArray] = []
    segs: list[IntArray] = []
    exact: list[IntArray] = [np.empty(0, dtype=np.int64)]
    vc = flat_of(ga[:, 0], ga[:, 1], seg_zone)
    vcells, vids = [vc], [seg_ids]
    cells += [vc, flat_of(gb[:, 0], gb[:, 1], seg_zone), vc]
    segs += [seg_ids, seg_ids, prev]
    fx, fy = ga[:, 0] - np.floor(ga[:, 0]), ga[:, 1] - np.floor(ga[:, 1])
    edgy = np.flatnonzero((fx < EPS_CELL) | (fx > 1 - EPS_CELL)
                          | (fy < EPS_CELL) | (fy > 1 - EPS_CELL))
    for dx in (-EPS_CELL, EPS_CELL):
        for dy in (-EPS_CELL, EPS_CELL):
            vce = flat_of(ga[edgy, 0] + dx, ga[edgy, 1] + dy, seg_zone[edgy])
            vcells.append(vce)
            vids.append(edgy)
            cells += [vce, vce]
            segs += [edgy, prev[edgy]]
    for axis in (0, 1):
        u0, u1 = ga[:, axis], gb[:, axis]
        v0, v1 = ga[:, 1 - axis], gb[:, 1 - axis]
        lo = np.floor(np.minimum(u0, u1)).astype(np.int64) + 1
        hi = np.floor(np.maximum(u0, u1)).astype(np.int64)
        cnt = np.maximum(hi - lo + 1, 0)
        total = int(cnt.sum())
        if total == 0:
            continue
        seg = np.repeat(seg_ids, cnt)
        z = seg_zone[seg]
        k = lo[seg] + np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        t = (k - u0[seg]) / (u1[seg] - u0[seg])
        v = v0[seg] + t * (v1[seg] - v0[seg])
        kf = k.astype(np.float64)
        frac = v - np.floor(v)
        corner = np.flatnonzero((frac < EPS_CELL) | (frac > 1 - EPS_CELL))
        for du in (-0.5, 0.5):
            fc = flat_of(kf + du, v, z) if axis == 0 else flat_of(v, kf + du, z)
            cells.append(fc)
            segs.append(seg)
            for dv in (-EPS_CELL, EPS_CELL):
                vv, kk, zz = v[corner] + dv, kf[corner] + du, z[corner]
                fc = flat_of(kk, vv, zz) if axis == 0 else flat_of(vv, kk, zz)
                cells.append(fc)
                segs.append(seg[corner])
                exact.append(fc)
    pair = _unique_sorted(np.sort(np.concatenate(cells) * nseg + np.concatenate(segs)))[0]
    pcell, pseg = np.divmod(pair, nseg)
    vpair = _unique_sorted(np.sort(np.concatenate(vcells) * nseg + np.concatenate(vids)))[0]
    vcell, vid = np.divmod(vpair, nseg)

    # Only cells the boundary touches are ever materialised: counts come from the sorted
    # (cell, segment) and (cell, vertex) pairs, never from arrays over every cell.
    boundary, first_pair, ns = _unique_sorted(pcell)
    vcells_u, vfirst, vcount = _unique_sorted(vcell)
    at = np.minimum(np.searchsorted(vcells_u, boundary), vcells_u.size - 1)
    nv = np.where(vcells_u[at] == boundary, vcount[at], 0)  # every ring has vertices
    exact_cells = np.concatenate(exact)
    s_lo = pseg[first_pair]
    s_hi = pseg[np.minimum(first_pair + 1, pseg.size - 1)]
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
        kv = vid[vfirst[at[one_vertex]]]
        pk = prev[kv]
        wedge = (((s_lo[one_vertex] == pk) & (s_hi[one_vertex] == kv))
                 | ((s_lo[one_vertex] == kv) & (s_hi[one_vertex] == pk)))
        wedge &= nonzero[kv] & nonzero[pk] & (pk != kv)
        sel = one_vertex[wedge]
        kv, pk = kv[wedge], pk[wedge]
        turn = d[pk, 0] * d[kv, 1] - d[pk, 1] * d[kv, 0]
        kind[sel] = np.where(turn >= 0, AND, OR).astype(np.int8)
        line1[sel], line2[sel] = pk, kv
    kind[np.isin(boundary, exact_cells)] = EXACT
    line1[kind == EXACT] = -1
    line2[kind == EXACT] = -1
    full = _full_cells(zones, origins, cell, (ws, hs, base), boundary)
    flat = np.concatenate([boundary, full])
    kinds = np.concatenate([kind, np.full(full.size, FULL, dtype=np.int8)])
    l1 = np.concatenate([line1, np.full(full.size, -1, dtype=np.int64)])
    l2 = np.concatenate([line2, np.full(full.size, -1, dtype=np.int64)])
    zone_of = np.searchsorted(base, flat, side="right") - 1
    order = np.argsort(zone_of, kind="stable")
    flat, kinds, l1, l2, zone_of = flat[order], kinds[order], l1[order], l2[order], zone_of[order]
    cuts = np.searchsorted(zone_of, np.arange(n + 1)).tolist()
    seg_cuts = np.searchsorted(seg_zone, np.arange(n + 1)).tolist()
    segments = np.column_stack([a, d])
    out: list[Raster] = []
    for i in range(n):
        lo_e, hi_e = cuts[i], cuts[i + 1]
        s0, s1 = seg_cuts[i], seg_cuts[i + 1]
        e1, e2 = l1[lo_e:hi_e], l2[lo_e:hi_e]
        out.append(Raster(
            # int32 halves what an index keeps per fence for incremental rebuilds; windows
            # are capped by max_cells_per_fence and segments per fence are far below 2**31.
            flat=(flat[lo_e:hi_e] - base[i]).astype(np.int32), kind=kinds[lo_e:hi_e],
            line1=np.where(e1 >= 0, e1 - s0, -1).astype(np.int32),
            line2=np.where(e2 >= 0, e2 - s0, -1).astype(np.int32),
            segments=segments[s0:s1]))
    return out


def _full_cells(zones: NDArray[np.object_], origins: FloatArray, cell: tuple[float, float],
                windows: tuple[IntArray, IntArray, IntArray], boundary: IntArray) -> IntArray:
    """Flat ids of the cells wholly inside their zone, from the gaps between boundary cells.

    In each row of each window, the cells between two boundary cells (or a boundary cell and
    the row's end) form a run that the boundary does not touch: it lies wholly inside or
    wholly outside, and one centre test decides it. Work is proportional to the boundary
    cells, rows and inside cells, not to the windows' area.
    """
    ws, hs, base = windows
    cdx, cdy = cell
    n = ws.size
    bz = np.searchsorted(base, boundary, side="right") - 1
    brow, bcol = np.divmod(boundary - base[bz], ws[bz])
    row_base = np.cumsum(hs) - hs
    rows_total = int(hs.sum())
    row_id = row_base[bz] + brow  # sorted, since boundary is
    # Gaps: before each row's first boundary cell, between neighbours, after the last one.
    same_row_next = np.r_[row_id[1:] == row_id[:-1], False]
    first_in_row = np.r_[True, row_id[1:] != row_id[:-1]]
    g_row = np.concatenate([row_id[first_in_row], row_id[same_row_next], row_id[~same_row_next]])
    g_lo = np.concatenate([np.zeros(int(first_in_row.sum()), dtype=np.int64),
                           bcol[same_row_next] + 1, bcol[~same_row_next] + 1])
    next_col = np.r_[bcol[1:], 0]
    g_hi = np.concatenate([bcol[first_in_row], next_col[same_row_next],
                           np.full(int((~same_row_next).sum()), -1)])
    row_zone = np.repeat(np.arange(n), hs)
    g_hi = np.where(g_hi < 0, ws[row_zone[g_row]], g_hi)  # -1 marks "to the row's end"
    # Rows the boundary never enters (between the parts of a multipolygon): one run each.
    empty_rows = np.setdiff1d(np.arange(rows_total), row_id, assume_unique=False)
    g_row = np.concatenate([g_row, empty_rows])
    g_lo = np.concatenate([g_lo, np.zeros(empty_rows.size, dtype=np.int64)])
    g_hi = np.concatenate([g_hi, ws[row_zone[empty_rows]]])
    keep = g_hi > g_lo
    g_row, g_lo, g_hi = g_row[keep], g_lo[keep], g_hi[keep]
    if g_row.size == 0:
        return np.empty(0, dtype=np.int64)
    gz = row_zone[g_row]
    r = g_row - row_base[gz]
    inside = shapely.intersects_xy(zones[gz], origins[gz, 0] + (g_lo + 0.5) * cdx,
                                   origins[gz, 1] + (r + 0.5) * cdy)
    g_row, g_lo, g_hi, gz, r = g_row[inside], g_lo[inside], g_hi[inside], gz[inside], r[inside]
    length = g_hi - g_lo
    start = base[gz] + r * ws[gz] + g_lo
    total = int(length.sum())
    full = np.repeat(start - (np.cumsum(length) - length), length) + np.arange(total)
    return np.sort(full)
