"""synthgen.ops.perlin: gradient noise on separable grids."""

import itertools
import math

import torch

from synthgen.ops.perlin import (fade, fractal_noise, lattice_shape, perlin_noise, random_gradients,
                                 random_octave_gradients)


def _reference(gradients: torch.Tensor, point: tuple[float, float, float]) -> torch.Tensor:
    """The textbook formula, corner by corner, at one point."""
    cell = [min(int(math.floor(p)), gradients.shape[1 + a] - 2) for a, p in enumerate(point)]
    local = [p - c for p, c in zip(point, cell)]
    weights = [float(fade(torch.tensor(t, dtype=torch.float64))) for t in local]
    total = torch.zeros(gradients.shape[0], dtype=torch.float64)
    for corner in itertools.product((0, 1), repeat=3):
        w = math.prod(weights[a] if corner[a] else 1 - weights[a] for a in range(3))
        g = gradients[:, cell[0] + corner[0], cell[1] + corner[1], cell[2] + corner[2]].double()
        total += w * (g @ torch.tensor([local[a] - corner[a] for a in range(3)], dtype=torch.float64))
    return total


def test_zero_at_lattice_points():
    gradients = random_gradients(3, (4, 5, 6), torch.Generator().manual_seed(0))
    coords = [torch.arange(n, dtype=torch.float64) for n in (4, 5, 6)]
    assert perlin_noise(gradients, coords).abs().max() == 0


def test_gradients_are_unit_vectors_and_deterministic():
    a = random_gradients(2, (3, 3, 3), torch.Generator().manual_seed(7))
    b = random_gradients(2, (3, 3, 3), torch.Generator().manual_seed(7))
    c = random_gradients(2, (3, 3, 3), torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2, 3, 3, 3))


def test_matches_textbook_formula_between_lattice_points():
    gradients = random_gradients(4, (4, 5, 6), torch.Generator().manual_seed(3))
    for point in [(0.3, 1.7, 2.2), (2.9, 3.1, 4.5), (0.0, 4.0, 0.5), (3.0, 2.25, 5.0)]:
        value = perlin_noise(gradients, [torch.tensor([p]) for p in point]).flatten().double()
        torch.testing.assert_close(value, _reference(gradients, point), rtol=0, atol=1e-6)


def test_sub_window_evaluates_the_same_field():
    gradients = random_gradients(2, (6, 6, 6), torch.Generator().manual_seed(4))
    axis = torch.linspace(0, 5, 41, dtype=torch.float64)
    full = perlin_noise(gradients, [axis] * 3)
    part = perlin_noise(gradients, [axis[5:20], axis[10:30], axis[0:7]])
    torch.testing.assert_close(part, full[:, 5:20, 10:30, 0:7])


def test_bounded_and_continuous():
    gradients = random_gradients(8, (5, 5, 5), torch.Generator().manual_seed(5))
    axis = torch.linspace(0, 4, 81, dtype=torch.float64)
    noise = perlin_noise(gradients, [axis] * 3)
    assert noise.abs().max() < math.sqrt(3)
    assert noise.diff(dim=1).abs().max() < 0.2          # step 0.05 lattice units


def test_fractal_noise_is_a_weighted_sum_of_octaves():
    generator = torch.Generator().manual_seed(6)
    axis = torch.linspace(0, 3, 13, dtype=torch.float64)
    lattices = random_octave_gradients(2, (3.0, 3.0, 3.0), 2, generator)
    assert [tuple(t.shape[1:4]) for t in lattices] == [lattice_shape((3, 3, 3)), lattice_shape((6, 6, 6))]
    expected = perlin_noise(lattices[0], [axis] * 3) + 0.5 * perlin_noise(lattices[1], [axis * 2] * 3)
    torch.testing.assert_close(fractal_noise(lattices, [axis] * 3), expected)
    torch.testing.assert_close(fractal_noise(lattices[:1], [axis] * 3), perlin_noise(lattices[0], [axis] * 3))


def test_rejects_coordinates_outside_the_lattice():
    gradients = random_gradients(1, (3, 3, 3), torch.Generator().manual_seed(0))
    try:
        perlin_noise(gradients, [torch.tensor([2.5]), torch.tensor([0.0]), torch.tensor([0.0])])
    except ValueError:
        return
    raise AssertionError("coordinate beyond the lattice accepted")
