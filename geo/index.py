"""The fence index: every tenant's fences, answering point-in-fence for a batch of positions.

Fast path (details in `geo.grid`). A uniform grid in longitude/latitude (cells of
`grid_cell_m` metres at the fences' median latitude, on a fixed lattice) is laid over all
fences; at build time each fence is rasterised into it, and every cell it meets gets an entry
saying how to decide a position there: wholly inside (no test), one side of one segment or of
a corner (a cross product or two), or an exact GEOS test. Entries are keyed by (tenant, cell),
so a position only ever meets its own tenant's fences. At query time a whole batch is located
in the grid with numpy, side tests run vectorised, and the few exact candidates go to one
`shapely.intersects_xy` call over prepared zones.

Fences too large for the grid (`max_cells_per_fence`) go to a shapely STRtree and are tested
exactly for every position of their tenant. Segment queries (`crossed`) use the grid for the
common short segment and a per-tenant STRtree otherwise. Containment includes the boundary,
like PostGIS `ST_Covers`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from uuid import UUID

import numpy as np
import shapely
from numpy.typing import NDArray

from geo.config import GeofenceSettings
from geo.errors import GeoError
from geo.fence import Fence
from geo.geodesy import LocalFrame, densify_geodesic, great_circle_m_scalar
from geo.grid import AND, BLOCK, BLOCK_BITS, EXACT, FULL, HALF, Raster, rasterise_many, side_tests

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
EMPTY: frozenset[UUID] = frozenset()
_SIDE_TOL_CELLS = 1e-9
"""Positions closer than this (in cells) to a segment's line get the exact GEOS test."""

_tenant_keys: dict[UUID, int] = {}
_tenant_lock = threading.Lock()
_versions = itertools.count(1)


def tenant_key(tenant_id: UUID) -> int:
    """A small integer for a tenant, stable for the life of the process across index rebuilds."""
    key = _tenant_keys.get(tenant_id)
    if key is None:
        with _tenant_lock:
            key = _tenant_keys.setdefault(tenant_id, len(_tenant_keys))
    return key


def tenant_keys(tenant_ids: Iterable[UUID]) -> IntArray:
    """`tenant_key` for many tenants at once, as the int64 array `containing` accepts."""
    ids = list(tenant_ids)
    get = _tenant_keys.get
    keys = [get(t) for t in ids]
    if any(k is None for k in keys):
        keys = [tenant_key(t) for t in ids]
    return np.asarray(keys, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class _Grid:
    x0: float
    y0: float
    cdx: float
    cdy: float
    ncols: int
    nrows: int
    tenant_slots: int
    block_keys: IntArray
    """Sorted keys (tenant, block row, block column) of blocks holding any entry."""
    ptr: IntArray
    """Entries of dense cell d = block ordinal * BLOCK**2 + row * BLOCK + col: ptr[d]:ptr[d+1]."""
    entry_fence: NDArray[np.int32]
    entry_kind: NDArray[np.int8]
    entry_line1: NDArray[np.int32]
    entry_line2: NDArray[np.int32]
    segments: FloatArray

    @property
    def bcols(self) -> int:
        return (self.ncols >> BLOCK_BITS) + 1

    @property
    def brows(self) -> int:
        return (self.nrows >> BLOCK_BITS) + 1

    def locate(self, tkeys: IntArray, lons: FloatArray,
               lats: FloatArray) -> tuple[IntArray, IntArray, NDArray[np.bool_]]:
        """Cell column and row of each position, and whether it is on the grid at all."""
        with np.errstate(invalid="ignore"):
            fx = np.floor((lons - self.x0) / self.cdx)
            fy = np.floor((lats - self.y0) / self.cdy)
            ok = ((fx >= 0) & (fx < self.ncols) & (fy >= 0) & (fy < self.nrows)
                  & (tkeys >= 0) & (tkeys < self.tenant_slots))
        return np.where(ok, fx, 0).astype(np.int64), np.where(ok, fy, 0).astype(np.int64), ok

    def ranges(self, tkeys: IntArray, ix: IntArray, iy: IntArray,
               ok: NDArray[np.bool_]) -> tuple[IntArray, IntArray]:
        """Entry range [lo, hi) of each cell; empty where `ok` is False."""
        bkey = ((tkeys * self.brows + (iy >> BLOCK_BITS)) * self.bcols + (ix >> BLOCK_BITS))
        bpos = np.searchsorted(self.block_keys, bkey)
        np.minimum(bpos, self.block_keys.size - 1, out=bpos)
        found = ok & (self.block_keys[bpos] == bkey)
        dense = (bpos << (2 * BLOCK_BITS)) + ((iy & (BLOCK - 1)) << BLOCK_BITS) + (ix & (BLOCK - 1))
        dense = np.where(found, dense, 0)
        lo = self.ptr[dense]
        hi = np.where(found, self.ptr[dense + 1], lo)
        return lo, hi


class FenceIndex:
    """An immutable index of fences of all tenants; build a new one to change it."""

    def __init__(self, fences: Sequence[Fence], settings: GeofenceSettings, version: int,
                 previous: FenceIndex | None = None) -> None:
        """Use `FenceIndex.build`."""
        self.version = version
        """Identifies this build; the store uses the fences' change counter."""
        self.settings = settings
        self._fences = list(fences)
        self._ids = [f.id for f in self._fences]
        self._by_id = {f.id: f for f in self._fences}
        if len(self._by_id) != len(self._fences):
            raise GeoError("fence ids must be unique")
        self._singles_arr = np.empty(len(self._fences), dtype=object)
        self._singles_arr[:] = [frozenset((f.id,)) for f in self._fences]
        self._tkey = np.asarray([tenant_key(f.tenant_id) for f in self._fences], dtype=np.int64)
        self._zones = np.asarray([f.zone for f in self._fences] or [], dtype=object)
        shapely.prepare(self._zones)
        self._rasters: dict[UUID, tuple[shapely.Geometry, int, int, int, int, Raster]] = {}
        self._cell_deg: tuple[float, float] = (0.0, 0.0)
        self._grid, large = self._build_grid(previous)
        self._large = np.asarray(large, dtype=np.int64)
        self._large_tree = shapely.STRtree(self._zones[self._large]) if large else None
        self._large_tenants = frozenset(self._tkey[self._large].tolist())
        self._block_list: list[int] = self._grid.block_keys.tolist()
        self._trees = self._build_tenant_trees()

    @classmethod
    def build(cls, fences: Iterable[Fence], settings: GeofenceSettings | None = None,
              version: int | None = None, previous: FenceIndex | None = None) -> FenceIndex:
        """Index `fences`; `version` defaults to a process-wide increasing counter.

        With `previous` (the index this one replaces), fences whose zone did not change reuse
        their rasterisation, so a reload after editing a few fences costs little.
        """
        return cls(list(fences), settings or GeofenceSettings(),
                   next(_versions) if version is None else version, previous)

    # ---- lookups ------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of fences."""
        return len(self._fences)

    def fence(self, fence_id: UUID) -> Fence:
        """The fence with this id; KeyError if the index has none."""
        return self._by_id[fence_id]

    def get(self, fence_id: UUID) -> Fence | None:
        """The fence with this id, or None."""
        return self._by_id.get(fence_id)

    def fences(self) -> list[Fence]:
        """All fences, in build order."""
        return list(self._fences)

    def speed_limit_kph(self, fence_ids: Iterable[UUID]) -> float | None:
        """The lowest speed limit among these fences, or None when none of them sets one."""
        limits = [f.speed_limit_kph for i in fence_ids
                  if (f := self._by_id.get(i)) is not None and f.speed_limit_kph is not None]
        return min(limits) if limits else None

    @property
    def grid_stats(self) -> dict[str, float]:
        """Size of the pre-classification grid (for benchmarks and logs)."""
        g = self._grid
        kinds = np.bincount(g.entry_kind, minlength=5) if g.entry_kind.size else np.zeros(5)
        return {
            "blocks": int(g.block_keys.size), "entries": int(g.entry_fence.size),
            "full_entries": int(kinds[FULL]), "exact_entries": int(kinds[EXACT]),
            "side_entries": int(kinds[2:].sum()),
            "cell_m": self.settings.grid_cell_m, "large_fences": int(self._large.size),
        }

    # ---- point queries ------------------------------------------------------------------------

    def containing(self, tenant_ids: IntArray | Sequence[UUID], lons: FloatArray,
                   lats: FloatArray) -> list[frozenset[UUID]]:
        """For each position, the ids of its own tenant's fences whose zone covers it.

        `tenant_ids` is either an int array of `tenant_key`s or a sequence of tenant UUIDs.
        Positions with a NaN coordinate are in no fence.
        """
        n = len(lons)
        pidx, fidx = self.containing_pairs(tenant_ids, lons, lats)
        if pidx.size == 0:
            return [EMPTY] * n
        # Assembled in an object array so that the common cases (no fence, one fence) are
        # filled by numpy without a Python loop; only positions in several fences build a set.
        out = np.full(n, EMPTY, dtype=object)
        counts = np.bincount(pidx, minlength=n)
        single = counts[pidx] == 1
        out[pidx[single]] = self._singles_arr[fidx[single]]
        if not single.all():
            ids = self._ids
            mp, mf = pidx[~single], fidx[~single]
            firsts = np.flatnonzero(np.r_[True, mp[1:] != mp[:-1]])
            bounds = np.r_[firsts, mp.size].tolist()
            fence_ids = [ids[f] for f in mf.tolist()]
            out[mp[firsts]] = [frozenset(fence_ids[lo:hi])
                               for lo, hi in itertools.pairwise(bounds)]
        result: list[frozenset[UUID]] = out.tolist()
        return result

    def containing_pairs(self, tenant_ids: IntArray | Sequence[UUID], lons: FloatArray,
                         lats: FloatArray) -> tuple[IntArray, IntArray]:
        """(position index, fence ordinal) of every hit, sorted by position: the raw result."""
        lons = np.asarray(lons, dtype=np.float64)
        lats = np.asarray(lats, dtype=np.float64)
        tk = self._keys_of(tenant_ids)
        if not lons.shape == lats.shape == tk.shape or lons.ndim != 1:
            raise GeoError("tenant_ids, lons and lats must be 1-d and of the same length")
        pidx, fidx = self._grid_hits(tk, lons, lats)
        if self._large_tree is not None:
            lp, lf = self._large_hits(tk, lons, lats)
            if lp.size:
                pidx, fidx = np.concatenate([pidx, lp]), np.concatenate([fidx, lf])
                order = np.lexsort((fidx, pidx))
                pidx, fidx = pidx[order], fidx[order]
        return pidx, fidx

    def _keys_of(self, tenant_ids: IntArray | Sequence[UUID]) -> IntArray:
        if isinstance(tenant_ids, np.ndarray) and tenant_ids.dtype.kind in "iu":
            return tenant_ids.astype(np.int64, copy=False)
        return tenant_keys(tenant_ids)

    def _grid_hits(self, tk: IntArray, lons: FloatArray,
                   lats: FloatArray) -> tuple[IntArray, IntArray]:
        g = self._grid
        empty = np.empty(0, dtype=np.int64)
        if g.block_keys.size == 0:
            return empty, empty
        ix, iy, ok = g.locate(tk, lons, lats)
        lo, hi = g.ranges(tk, ix, iy, ok)
        count = hi - lo
        hp = np.flatnonzero(count)
        if hp.size == 0:
            return empty, empty
        start, count = lo[hp], count[hp]
        total = int(count.sum())
        pidx = np.repeat(hp, count)
        # Entry offsets of each hit cell, laid end to end: start of its range + rank within it.
        offs = np.repeat(start - (np.cumsum(count) - count), count) + np.arange(total)
        fidx = g.entry_fence[offs].astype(np.int64)
        kind = g.entry_kind[offs]
        ok_hit = kind == FULL
        exact = kind == EXACT
        sided = np.flatnonzero(kind >= HALF)
        if sided.size:
            so = offs[sided]
            sp = pidx[sided]
            inside, undecided = side_tests(
                kind[sided], (g.entry_line1[so], g.entry_line2[so]), g.segments,
                px=lons[sp], py=lats[sp], tol_deg=_SIDE_TOL_CELLS * g.cdy)
            ok_hit[sided] = inside
            exact[sided[undecided]] = True
        ex = np.flatnonzero(exact)
        if ex.size:
            ep = pidx[ex]
            ok_hit[ex] = shapely.intersects_xy(self._zones[fidx[ex]], lons[ep], lats[ep])
        return pidx[ok_hit], fidx[ok_hit]

    def _large_hits(self, tk: IntArray, lons: FloatArray,
                    lats: FloatArray) -> tuple[IntArray, IntArray]:
        empty = np.empty(0, dtype=np.int64)
        if self._large_tree is None:
            return empty, empty
        finite = np.isfinite(lons) & np.isfinite(lats)
        sel = np.flatnonzero(finite & np.isin(tk, self._tkey[self._large]))
        if sel.size == 0:
            return empty, empty
        pairs = self._large_tree.query(shapely.points(lons[sel], lats[sel]), predicate="intersects")
        pidx = sel[pairs[0]]
        fidx = self._large[pairs[1]]
        same = self._tkey[fidx] == tk[pidx]
        return pidx[same].astype(np.int64), fidx[same].astype(np.int64)

    # ---- segment queries ----------------------------------------------------------------------

    def has_fences(self, tenant_id: UUID) -> bool:
        """True when the tenant has at least one active fence in this index."""
        return _tenant_keys.get(tenant_id, -1) in self._trees

    def crossed(self, tenant_id: UUID, lon0: float, lat0: float, lon1: float, lat1: float,
                *, endpoint_fences: frozenset[UUID] | None = None) -> frozenset[UUID]:
        """Ids of the tenant's fences that the great-circle segment between two fixes touches.

        The segment is the shortest path on the sphere, as PostGIS geography joins two points;
        one longer than `densify_max_edge_m` is followed by chords of at most that length, like
        the fences' own edges (a straight line in degrees would pass a 20 km east-west segment
        at 52 degrees about 10 m south of it). `endpoint_fences`, when given, must be the
        fences that contain either fix (from `containing`); they are left out of the answer,
        and knowing that no other fence holds an end lets most short segments be settled from
        the grid without any geometry.
        """
        entry = self._trees.get(_tenant_keys.get(tenant_id, -1))
        if entry is None:
            return EMPTY
        ignore = endpoint_fences or EMPTY
        ids = self._ids
        max_edge_m = self.settings.densify_max_edge_m
        arc: shapely.LineString | None = None
        box = (lon0, lat0, lon1, lat1)
        if great_circle_m_scalar(lon0, lat0, lon1, lat1) > max_edge_m:
            arc = densify_geodesic(shapely.LineString([(lon0, lat0), (lon1, lat1)]), max_edge_m)
            minx, miny, maxx, maxy = arc.bounds
            box = (minx, miny, maxx, maxy)  # the arc bulges poleward out of the ends' box
        near = self._segment_candidates(tenant_id, box,
                                        ends_outside=endpoint_fences is not None and arc is None)
        candidates = None if near is None else sorted(c for c in near if ids[c] not in ignore)
        if candidates is not None and not candidates:
            return EMPTY
        segment = arc if arc is not None else shapely.LineString([(lon0, lat0), (lon1, lat1)])
        if candidates is None:
            tree, members = entry
            hits = [int(members[h]) for h in tree.query(segment, predicate="intersects")]
        else:
            touched = shapely.intersects(self._zones[candidates], segment)
            hits = [c for c, t in zip(candidates, touched.tolist(), strict=True) if t]
        return frozenset(ids[h] for h in hits if ids[h] not in ignore)

    def _segment_candidates(self, tenant_id: UUID, box: tuple[float, float, float, float],
                            *, ends_outside: bool) -> set[int] | None:
        """Fences that may touch a segment inside `box` (two opposite lon/lat corners), from
        the grid cells of the box; None: too long.

        Most consecutive fixes are metres apart, so the box is a cell or two. When a single
        straight edge lies in one cell and neither end is in the fence (`ends_outside`), only an
        EXACT or AND (convex corner) entry can be touched: in a FULL, HALF or OR (reflex corner)
        cell the outside is convex (or empty), so a segment between two outside points stays
        outside. Plain Python on purpose: it runs once per reading, where numpy's per-call
        overhead would cost more than the whole lookup.
        """
        g = self._grid
        lon0, lat0, lon1, lat1 = box
        tk = _tenant_keys.get(tenant_id, -1)
        if tk in self._large_tenants or not (
                math.isfinite(lon0) and math.isfinite(lat0)
                and math.isfinite(lon1) and math.isfinite(lat1)):
            return None
        found: set[int] = set()
        if not self._block_list:
            return found
        cx0, cx1 = sorted((math.floor((lon0 - g.x0) / g.cdx), math.floor((lon1 - g.x0) / g.cdx)))
        cy0, cy1 = sorted((math.floor((lat0 - g.y0) / g.cdy), math.floor((lat1 - g.y0) / g.cdy)))
        if (cx1 - cx0 + 1) * (cy1 - cy0 + 1) > 16:
            return None
        only_exact = ends_outside and cx0 == cx1 and cy0 == cy1
        blocks, ptr, fence_of, kind_of = self._block_list, g.ptr, g.entry_fence, g.entry_kind
        for iy in range(max(cy0, 0), min(cy1, g.nrows - 1) + 1):
            for ix in range(max(cx0, 0), min(cx1, g.ncols - 1) + 1):
                bkey = (tk * g.brows + (iy >> BLOCK_BITS)) * g.bcols + (ix >> BLOCK_BITS)
                j = bisect.bisect_left(blocks, bkey)
                if j == len(blocks) or blocks[j] != bkey:
                    continue
                d = ((j << (2 * BLOCK_BITS)) + ((iy & (BLOCK - 1)) << BLOCK_BITS)
                     + (ix & (BLOCK - 1)))
                lo, hi = int(ptr[d]), int(ptr[d + 1])
                if hi == lo:
                    continue
                if only_exact:
                    kinds = kind_of[lo:hi]
                    found.update(fence_of[lo:hi][(kinds == EXACT) | (kinds == AND)].tolist())
                else:
                    found.update(fence_of[lo:hi].tolist())
        return found

    # ---- build --------------------------------------------------------------------------------

    def _build_tenant_trees(self) -> dict[int, tuple[shapely.STRtree, IntArray]]:
        trees: dict[int, tuple[shapely.STRtree, IntArray]] = {}
        if not self._fences:
            return trees
        order = np.argsort(self._tkey, kind="stable")
        keys, starts = np.unique(self._tkey[order], return_index=True)
        for key, members in zip(keys.tolist(), np.split(order, starts[1:]), strict=True):
            trees[key] = (shapely.STRtree(self._zones[members]), members.astype(np.int64))
        return trees

    def _build_grid(  # noqa: PLR0912, PLR0915 - one build pipeline, read top to bottom
            self, previous: FenceIndex | None) -> tuple[_Grid, list[int]]:
        s = self.settings
        if not self._fences:
            return _empty_grid(), []
        bounds = shapely.bounds(self._zones)
        reuse = (previous is not None and previous._cell_deg[0] > 0
                 and previous.settings.grid_cell_m == s.grid_cell_m
                 and previous.settings.densify_max_edge_m == s.densify_max_edge_m)
        if reuse and previous is not None:
            # Same lattice as before, so that unchanged fences keep their rasters.
            cdx, cdy = previous._cell_deg
        else:
            ref_lat = float(np.median((bounds[:, 1] + bounds[:, 3]) / 2))
            frame = LocalFrame.at(0.0, ref_lat)
            cdx = s.grid_cell_m / frame.m_per_deg_x
            cdy = s.grid_cell_m / frame.m_per_deg_y
        self._cell_deg = (cdx, cdy)
        # The grid's origin sits on the absolute lattice (multiples of the cell size), so a
        # fence's window, and hence its raster, does not move when other fences change.
        kx0 = math.floor(float(bounds[:, 0].min()) / cdx) - 1
        ky0 = math.floor(float(bounds[:, 1].min()) / cdy) - 1
        x0, y0 = kx0 * cdx, ky0 * cdy
        ncols = math.floor(float(bounds[:, 2].max()) / cdx) - kx0 + 2
        nrows = math.floor(float(bounds[:, 3].max()) / cdy) - ky0 + 2
        slots = int(self._tkey.max()) + 1
        brows, bcols = (nrows >> BLOCK_BITS) + 1, (ncols >> BLOCK_BITS) + 1
        if slots * brows * bcols >= 2**62:
            raise GeoError(f"grid too large ({nrows}x{ncols} cells x {slots} tenants): "
                           "raise grid_cell_m")
        parts: list[tuple[IntArray, IntArray, int, Raster]] = []
        large: list[int] = []
        segments: list[FloatArray] = []
        old = previous._rasters if reuse and previous is not None else {}
        todo: list[tuple[int, int, int, int, int]] = []
        for i, zone in enumerate(self._zones):
            cached = old.get(self._ids[i])
            if cached is not None and shapely.equals_exact(cached[0], zone, tolerance=0.0):
                self._rasters[self._ids[i]] = cached
                continue
            b = bounds[i]
            ax0, ay0 = math.floor(b[0] / cdx), math.floor(b[1] / cdy)
            w = math.floor(b[2] / cdx) - ax0 + 1
            h = math.floor(b[3] / cdy) - ay0 + 1
            if w * h > s.max_cells_per_fence:
                large.append(i)
            else:
                todo.append((i, ax0, ay0, w, h))
        # Rasterise the new and changed fences together, in chunks that bound the temporaries.
        for chunk in _chunks(todo, max_cells=4_000_000, max_fences=2_000):
            idx = np.asarray([c[0] for c in chunk], dtype=np.int64)
            win = np.asarray([c[1:] for c in chunk], dtype=np.int64)
            origins = np.column_stack([win[:, 0] * cdx, win[:, 1] * cdy])
            rasters_ = rasterise_many(self._zones[idx], origins, (cdx, cdy), win[:, 2:4])
            for (i, ax0, ay0, w, h), r in zip(chunk, rasters_, strict=True):
                self._rasters[self._ids[i]] = (self._zones[i], ax0, ay0, w, h, r)
        large_set = set(large)
        for i in range(len(self._fences)):
            if i in large_set:
                continue
            _, ax0, ay0, w, h, r = self._rasters[self._ids[i]]
            rows, cols = np.divmod(r.flat.astype(np.int64), w)
            parts.append((ay0 - ky0 + rows, ax0 - kx0 + cols, i, r))
            segments.append(r.segments)
        if not parts:
            return _empty_grid(), large
        iy = np.concatenate([p[0] for p in parts])
        ix = np.concatenate([p[1] for p in parts])
        fence = np.concatenate([np.full(p[0].size, p[2], dtype=np.int32) for p in parts])
        rasters = [p[3] for p in parts]
        kind = np.concatenate([r.kind for r in rasters])
        sizes = np.asarray([r.segments.shape[0] for r in rasters], dtype=np.int64)
        offsets = (np.cumsum(sizes) - sizes).tolist()
        line1 = np.concatenate([np.where(r.line1 >= 0, r.line1.astype(np.int64) + o, -1)
                                for r, o in zip(rasters, offsets, strict=True)])
        line2 = np.concatenate([np.where(r.line2 >= 0, r.line2.astype(np.int64) + o, -1)
                                for r, o in zip(rasters, offsets, strict=True)])
        tk = self._tkey[fence]
        bkey = (tk * brows + (iy >> BLOCK_BITS)) * bcols + (ix >> BLOCK_BITS)
        # Sort by (block, cell within block) in one pass: then block ordinals follow directly.
        local = ((iy & (BLOCK - 1)) << BLOCK_BITS) + (ix & (BLOCK - 1))
        order = np.lexsort((local, bkey))
        sorted_b = bkey[order]
        new_block = np.r_[True, sorted_b[1:] != sorted_b[:-1]]
        block_keys = sorted_b[new_block]
        dense_sorted = ((np.cumsum(new_block) - 1) << (2 * BLOCK_BITS)) + local[order]
        ptr = np.searchsorted(dense_sorted, np.arange(block_keys.size * BLOCK * BLOCK + 1))
        grid = _Grid(x0, y0, cdx, cdy, ncols, nrows, slots, block_keys.astype(np.int64),
                     ptr.astype(np.int64), fence[order], kind[order],
                     line1[order].astype(np.int32), line2[order].astype(np.int32),
                     np.vstack(segments))
        return grid, large


def _chunks(todo: list[tuple[int, int, int, int, int]], *, max_cells: int,
            max_fences: int) -> list[list[tuple[int, int, int, int, int]]]:
    """Split (fence, x, y, w, h) windows into groups of bounded total area and count."""
    out: list[list[tuple[int, int, int, int, int]]] = []
    current: list[tuple[int, int, int, int, int]] = []
    cells = 0
    for item in todo:
        area = item[3] * item[4]
        if current and (cells + area > max_cells or len(current) >= max_fences):
            out.append(current)
            current, cells = [], 0
        current.append(item)
        cells += area
    if current:
        out.append(current)
    return out


def _empty_grid() -> _Grid:
    return _Grid(0.0, 0.0, 1.0, 1.0, 0, 0, 0, np.empty(0, np.int64), np.zeros(1, np.int64),
                 np.empty(0, np.int32), np.empty(0, np.int8), np.empty(0, np.int32),
                 np.empty(0, np.int32), np.empty((0, 4)))
