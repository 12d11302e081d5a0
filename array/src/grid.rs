//! How an array is cut into chunks: per axis, the lengths of its chunks (Dask's `chunks`).

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// A rectangular piece of an array: one half-open range per axis.
pub type Region = Vec<Range<usize>>;

/// Number of cells in a region or shape.
pub fn cells(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// The lengths of a region's ranges.
pub fn region_shape(region: &[Range<usize>]) -> Vec<usize> {
    region.iter().map(|r| r.end - r.start).collect()
}

/// The whole of an array of `shape`.
pub fn full_region(shape: &[usize]) -> Region {
    shape.iter().map(|&n| 0..n).collect()
}

/// The chunk lengths along each axis of an array. Every axis has at least one chunk
/// (an axis of length 0 has one chunk of length 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkGrid {
    chunks: Vec<Vec<usize>>,
}

impl ChunkGrid {
    /// A grid from explicit chunk lengths per axis.
    pub fn new(chunks: Vec<Vec<usize>>) -> Self {
        let chunks = chunks
            .into_iter()
            .map(|c| if c.is_empty() { vec![0] } else { c })
            .collect();
        Self { chunks }
    }

    /// Chunks of `chunk[i]` along axis `i` (the last one shorter when it does not divide).
    /// A chunk length of 0 means the whole axis.
    pub fn regular(shape: &[usize], chunk: &[usize]) -> Self {
        Self::new(
            shape
                .iter()
                .zip(chunk)
                .map(|(&n, &c)| split_axis(n, c))
                .collect(),
        )
    }

    /// One chunk covering the whole array.
    pub fn single(shape: &[usize]) -> Self {
        Self::new(shape.iter().map(|&n| vec![n]).collect())
    }

    /// Number of axes.
    pub fn ndim(&self) -> usize {
        self.chunks.len()
    }

    /// The array's shape.
    pub fn shape(&self) -> Vec<usize> {
        self.chunks.iter().map(|c| c.iter().sum()).collect()
    }

    /// Chunk lengths along each axis.
    pub fn chunks(&self) -> &[Vec<usize>] {
        &self.chunks
    }

    /// Chunk lengths along `axis`.
    pub fn axis(&self, axis: usize) -> &[usize] {
        &self.chunks[axis]
    }

    /// Number of chunks along each axis.
    pub fn counts(&self) -> Vec<usize> {
        self.chunks.iter().map(Vec::len).collect()
    }

    /// Number of chunks in all (1 for a 0-d array).
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).product()
    }

    /// Never true: a grid has at least one chunk.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The chunk coordinates of chunk `index` (chunks are numbered in C order).
    pub fn coords(&self, mut index: usize) -> Vec<usize> {
        let mut coords = vec![0; self.ndim()];
        for axis in (0..self.ndim()).rev() {
            let n = self.chunks[axis].len();
            coords[axis] = index % n;
            index /= n;
        }
        coords
    }

    /// The number of the chunk at `coords`.
    pub fn index(&self, coords: &[usize]) -> usize {
        coords
            .iter()
            .zip(&self.chunks)
            .fold(0, |acc, (&c, lens)| acc * lens.len() + c)
    }

    /// Where chunk `index` lies in the array.
    pub fn region(&self, index: usize) -> Region {
        self.coords(index)
            .iter()
            .enumerate()
            .map(|(axis, &c)| {
                let start: usize = self.chunks[axis][..c].iter().sum();
                start..start + self.chunks[axis][c]
            })
            .collect()
    }

    /// The chunks along `axis` that overlap `range`: (chunk coordinate, range inside the
    /// chunk, range inside `range`).
    pub fn overlaps(
        &self,
        axis: usize,
        range: &Range<usize>,
    ) -> Vec<(usize, Range<usize>, Range<usize>)> {
        let mut out = Vec::new();
        let mut start = 0;
        for (c, &len) in self.chunks[axis].iter().enumerate() {
            let end = start + len;
            let lo = range.start.max(start);
            let hi = range.end.min(end);
            if lo < hi || (len == 0 && range.is_empty() && out.is_empty()) {
                out.push((
                    c,
                    lo - start..hi - start,
                    lo - range.start..hi - range.start,
                ));
            }
            if end >= range.end && !out.is_empty() {
                break;
            }
            start = end;
        }
        out
    }

    /// The largest chunk's number of cells.
    pub fn max_chunk_cells(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.iter().copied().max().unwrap_or(0))
            .product()
    }

    /// The grid of the same shape cut at the chunk boundaries of both this grid and
    /// `other`: each of its chunks lies inside one chunk of either.
    pub fn refine(&self, other: &ChunkGrid) -> ChunkGrid {
        let axis = |a: &[usize], b: &[usize]| -> Vec<usize> {
            let ends = |lens: &[usize]| -> Vec<usize> {
                lens.iter()
                    .scan(0, |end, &len| {
                        *end += len;
                        Some(*end)
                    })
                    .collect()
            };
            let mut cuts = ends(a);
            cuts.extend(ends(b));
            cuts.sort_unstable();
            cuts.dedup();
            let mut start = 0;
            let mut lens = Vec::with_capacity(cuts.len());
            for end in cuts {
                if end > start {
                    lens.push(end - start);
                    start = end;
                }
            }
            lens
        };
        ChunkGrid::new(
            self.chunks
                .iter()
                .zip(&other.chunks)
                .map(|(a, b)| axis(a, b))
                .collect(),
        )
    }

    /// For a grid `fine` that refines this one (see [`ChunkGrid::refine`]): the chunk of
    /// this grid that holds chunk `index` of `fine`, and its number among the chunks of
    /// `fine` inside that chunk (C order).
    pub fn piece_of(&self, fine: &ChunkGrid, index: usize) -> (usize, usize) {
        let coords = fine.coords(index);
        let mut outer = Vec::with_capacity(coords.len());
        let mut local = 0;
        for (axis, &c) in coords.iter().enumerate() {
            let map = piece_axis(&self.chunks[axis], &fine.chunks[axis]);
            let (chunk, position) = map.pieces[c];
            outer.push(chunk);
            local = local * map.counts[chunk] + position;
        }
        (self.index(&outer), local)
    }

    /// The chunks of `fine` (a refinement of this grid) inside chunk `index`, in C order:
    /// the `k`-th is the one [`ChunkGrid::piece_of`] numbers `k`.
    pub fn pieces_in(&self, fine: &ChunkGrid, index: usize) -> Vec<usize> {
        let coords = self.coords(index);
        let mut out = vec![Vec::new()];
        for (axis, &c) in coords.iter().enumerate() {
            let map = piece_axis(&self.chunks[axis], &fine.chunks[axis]);
            let inside: Vec<usize> = (0..map.pieces.len())
                .filter(|&f| map.pieces[f].0 == c)
                .collect();
            out = out
                .into_iter()
                .flat_map(|prefix| {
                    inside.iter().map(move |&f| {
                        let mut next = prefix.clone();
                        next.push(f);
                        next
                    })
                })
                .collect();
        }
        out.iter().map(|coords| fine.index(coords)).collect()
    }

    /// The most chunks of `fine` (a refinement of this grid) inside one chunk.
    pub fn max_pieces(&self, fine: &ChunkGrid) -> usize {
        self.chunks
            .iter()
            .zip(&fine.chunks)
            .map(|(a, f)| piece_axis(a, f).counts.into_iter().max().unwrap_or(1))
            .product()
    }
}

/// Along one axis, where the chunks of a refinement lie in the coarse chunks.
struct PieceAxis {
    /// Per fine chunk: (coarse chunk, position among the fine chunks inside it).
    pieces: Vec<(usize, usize)>,
    /// Per coarse chunk: how many fine chunks lie inside.
    counts: Vec<usize>,
}

fn piece_axis(coarse: &[usize], fine: &[usize]) -> PieceAxis {
    let mut pieces = Vec::with_capacity(fine.len());
    let mut counts = vec![0; coarse.len()];
    let (mut chunk, mut end, mut start) = (0, coarse[0], 0);
    for &len in fine {
        while start >= end && chunk + 1 < coarse.len() {
            chunk += 1;
            end += coarse[chunk];
        }
        pieces.push((chunk, counts[chunk]));
        counts[chunk] += 1;
        start += len;
    }
    PieceAxis { pieces, counts }
}

/// Cuts an axis of length `n` into chunks of `chunk` (0: one chunk).
pub fn split_axis(n: usize, chunk: usize) -> Vec<usize> {
    if chunk == 0 || chunk >= n {
        return vec![n];
    }
    let mut out = vec![chunk; n / chunk];
    if !n.is_multiple_of(chunk) {
        out.push(n % chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_and_overlaps() {
        let g = ChunkGrid::regular(&[10, 7], &[4, 3]);
        assert_eq!(g.chunks(), &[vec![4, 4, 2], vec![3, 3, 1]]);
        assert_eq!(g.len(), 9);
        assert_eq!(g.coords(5), vec![1, 2]);
        assert_eq!(g.index(&[1, 2]), 5);
        assert_eq!(g.region(5), vec![4..8, 6..7]);
        assert_eq!(
            g.overlaps(0, &(3..9)),
            vec![(0, 3..4, 0..1), (1, 0..4, 1..5), (2, 0..1, 5..6)]
        );
        let empty = ChunkGrid::regular(&[0], &[4]);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty.overlaps(0, &(0..0)), vec![(0, 0..0, 0..0)]);
    }

    #[test]
    fn a_refinement_numbers_its_pieces_inside_each_coarse_chunk() {
        let a = ChunkGrid::regular(&[10, 6], &[4, 6]);
        let b = ChunkGrid::regular(&[10, 6], &[10, 2]);
        let r = a.refine(&b);
        assert_eq!(r.chunks(), &[vec![4, 4, 2], vec![2, 2, 2]]);
        assert_eq!(a.max_pieces(&r), 3);
        for chunk in 0..a.len() {
            let inside = a.pieces_in(&r, chunk);
            assert_eq!(inside.len(), 3);
            for (k, &piece) in inside.iter().enumerate() {
                assert_eq!(a.piece_of(&r, piece), (chunk, k));
                // The piece lies inside its chunk.
                let (outer, inner) = (a.region(chunk), r.region(piece));
                assert!(
                    outer
                        .iter()
                        .zip(&inner)
                        .all(|(o, i)| o.start <= i.start && i.end <= o.end)
                );
            }
        }
        assert_eq!(a.piece_of(&r, r.index(&[2, 1])), (2, 1));
    }
}
