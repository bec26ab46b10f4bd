"""Read-only geometry of a live LIBERO scene (privileged simulator state) for the scripted expert.

Every LIBERO object and fixture is a root body (a child of the world) whose collision geoms are boxes;
a geom's world box is taken from MuJoCo's `geom_aabb` (centre and half-size in
the geom frame) so other geom types work as well. Body origins are not object centres (often the
bottom, sometimes off-centre), so extents come from the geoms, never from the origin.
"""

from __future__ import annotations

import numpy as np

# Sign pattern of a box's 8 corners.
_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
_ROBOT_PREFIXES = ("robot0_", "gripper0_", "mount0_")


class Scene:
    def __init__(self, domain):
        """`domain`: LIBERO's BDDL task env (LiberoEnv.domain), for its sim and name tables."""
        self.domain = domain
        self.model, self.data = domain.sim.model, domain.sim.data
        m = self.model
        collides = (m.geom_contype != 0) | (m.geom_conaffinity != 0)
        roots = m.body_rootid[m.geom_bodyid]
        robot_roots = {b for b in range(m.nbody) if m.body(b).name.startswith(_ROBOT_PREFIXES)}
        # World geoms (the floor plane) are unbounded: the table and floor scenes' supports are
        # found through the `table` body or not needed (floor z = 0).
        keep = collides & (roots != 0)
        self._root_of = roots
        self._is_robot = np.isin(roots, list(robot_roots))
        self._collision = keep

    # ---- names -------------------------------------------------------------------------------

    def body_id(self, name: str) -> int:
        try:
            return self.domain.obj_body_id[name]
        except KeyError:
            raise KeyError(f"expected an object or fixture name among {sorted(self.domain.obj_body_id)}, "
                           f"got {name!r}") from None

    def is_site(self, name: str) -> bool:
        return name in self.domain.object_sites_dict

    def geoms(self, name: str) -> np.ndarray:
        """Collision geom ids of an object or fixture (its whole body tree)."""
        ids = np.nonzero(self._collision & (self._root_of == self.body_id(name)))[0]
        if len(ids) == 0:
            raise ValueError(f"expected collision geoms on {name!r}, found none")
        return ids

    def other_geoms(self, *exclude: str) -> np.ndarray:
        """Collision geoms that are neither the robot's nor those of the named bodies."""
        mask = self._collision & ~self._is_robot
        for name in exclude:
            mask &= self._root_of != self.body_id(name)
        return np.nonzero(mask)[0]

    # ---- poses and boxes ---------------------------------------------------------------------

    def origin(self, name: str) -> np.ndarray:
        """World position of the body origin, which is what LIBERO's predicates test."""
        return self.data.body_xpos[self.body_id(name)].copy()

    def corners(self, geom_ids) -> np.ndarray:
        """World corners (n, 8, 3) of the geoms' boxes."""
        g = np.asarray(geom_ids)
        aabb = self.model.geom_aabb[g]                       # (n, 6): centre, half-size in geom frame
        local = aabb[:, None, :3] + _CORNERS[None] * aabb[:, None, 3:]
        rot = self.data.geom_xmat[g].reshape(-1, 3, 3)
        return np.einsum("nij,nkj->nki", rot, local) + self.data.geom_xpos[g][:, None, :]

    def extent(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned box (lo, hi) around the object's collision geoms."""
        c = self.corners(self.geoms(name)).reshape(-1, 3)
        return c.min(0), c.max(0)

    def footprint(self, name: str) -> np.ndarray:
        """xy points (n, 2) of the object's geom corners, for the grasp yaw."""
        return self.corners(self.geoms(name)).reshape(-1, 3)[:, :2]

    def boxes(self, geom_ids) -> tuple[np.ndarray, np.ndarray]:
        """Per-geom world axis-aligned boxes (lo (n, 3), hi (n, 3))."""
        c = self.corners(geom_ids)
        return c.min(1), c.max(1)

    def top_under(self, xy, geom_ids) -> float | None:
        """Highest top among the geoms whose world box contains the point xy, or None."""
        lo, hi = self.boxes(geom_ids)
        inside = np.all((lo[:, :2] <= xy) & (xy <= hi[:, :2]), axis=1)
        return float(hi[inside, 2].max()) if inside.any() else None

    def clearance_height(self, start_xy, end_xy, radius: float, slope: float, geom_ids) -> float | None:
        """Height that clears the geoms along the straight xy path start→end, or None without geoms.

        A geom whose footprint comes within `radius` of the path counts with its full top; one further
        away counts with its top lowered by `slope` × the extra distance. The result changes
        continuously with the scene, so nearly equal scenes get nearly equal paths (a hard cut-off would
        flip the height by the full height of a neighbour whenever it sat at the edge).
        """
        if len(geom_ids) == 0:
            return None
        lo, hi = self.boxes(geom_ids)
        start, end = np.asarray(start_xy, float), np.asarray(end_xy, float)
        n = max(2, int(np.linalg.norm(end - start) / 0.005) + 1)
        path = start + np.linspace(0.0, 1.0, n)[:, None] * (end - start)          # (n, 2)
        # Distance from each path point to each box footprint (0 inside), then the nearest point.
        gap = np.maximum(lo[None, :, :2] - path[:, None], 0) + np.maximum(path[:, None] - hi[None, :, :2], 0)
        distance = np.linalg.norm(gap, axis=2).min(axis=0)
        return float(np.max(hi[:, 2] - slope * np.maximum(distance - radius, 0.0)))

    def robot_base_xy(self) -> np.ndarray:
        return self.data.body_xpos[self.model.body_name2id("robot0_base")][:2].copy()

    # ---- sites --------------------------------------------------------------------------------

    def site_pos(self, site: str) -> np.ndarray:
        return self.data.get_site_xpos(site).copy()

    def site_half_size(self, site: str) -> np.ndarray:
        return np.abs(np.asarray(self.domain.object_sites_dict[site].size, dtype=np.float64))

    def site_parent(self, site: str) -> str | None:
        return self.domain.object_sites_dict[site].parent_name
