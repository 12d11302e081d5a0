//! How much memory a task of a [`ChunkProgram`] holds, estimated before it runs: what
//! workers reserve before starting array tasks and what planning checks against their
//! memory limit.

use datafusion_common::{Result, internal_err};

use crate::dtype::DType;
use crate::grid::{Region, cells, region_shape};
use crate::ops::Op;
use crate::program::{ChunkProgram, pieces};

impl ChunkProgram {
    /// Bytes task `task` holds at its peak, estimated from above: the input chunks it
    /// fetches or reads, every buffer evaluating its nodes allocates (as if none were
    /// freed before the end), and its output (twice when cut into pieces). A partial step
    /// over a run of chunks holds one chunk's inputs and buffers at a time, beside the
    /// states so far, the chunk's and their merge.
    pub fn task_bytes(&self, task: usize) -> Result<usize> {
        let root = &self.nodes[self.root()];
        let out_cells = cells(&region_shape(&root.grid.region(task)));
        let width: usize = self.output_fields().iter().map(|f| f.1.size()).sum();
        let out = out_cells * width;
        if let Some((x, regions)) = self.partial_runs(task)? {
            let mut largest = 0usize;
            for region in &regions {
                let inputs = self.input_bytes(self.needs_of(x, region)?)?;
                largest = largest.max(inputs.saturating_add(self.eval_bytes(x, region)?));
            }
            return Ok(largest.saturating_add(out.saturating_mul(4)));
        }
        let bytes = self.input_bytes(self.needs(task)?)?;
        let evaluated = match &root.op {
            Op::Partial { .. } | Op::Combine { .. } => {
                let mut sum = 0usize;
                for (x, region) in self.root_regions(task)? {
                    let fields = match &self.nodes[x].op {
                        Op::Input { fields, .. } => fields.len().max(1),
                        _ => 1,
                    };
                    sum = sum.saturating_add(self.eval_bytes(x, &region)?.saturating_mul(fields));
                }
                sum
            }
            _ => self.eval_bytes(self.root(), &root.grid.region(task))?,
        };
        let copies = if self.pieces.is_some() { 2 } else { 1 };
        Ok(bytes.saturating_add(evaluated).saturating_add(out * copies))
    }

    /// Bytes of the input chunks `needs` once fetched or read.
    fn input_bytes(&self, needs: Vec<(usize, usize)>) -> Result<usize> {
        let mut bytes = 0usize;
        for (node, chunk) in needs {
            let n = &self.nodes[node];
            let (grid, width) = match &n.op {
                Op::Input { grid, fields, .. } => (grid, fields.iter().map(|d| d.size()).sum()),
                // The stored bytes are held while they are decoded.
                Op::ZarrRead { grid, .. } => (grid, 2 * n.dtype.size()),
                _ => return internal_err!("node {node} is not an input"),
            };
            bytes = bytes.saturating_add(cells(&region_shape(&grid.region(chunk))) * width);
        }
        Ok(bytes)
    }

    /// Bytes of the buffers evaluating `node` over `region` allocates, summed over the
    /// nodes it evaluates (views of their input allocate nothing).
    fn eval_bytes(&self, node: usize, region: &Region) -> Result<usize> {
        let n = &self.nodes[node];
        let own = cells(&region_shape(region)).saturating_mul(n.dtype.size());
        let own = match &n.op {
            // A region spanning several chunks is copied together.
            Op::Input { grid, .. } | Op::ZarrRead { grid, .. } | Op::Literal { grid, .. } => {
                if pieces(grid, region).len() > 1 {
                    own
                } else {
                    0
                }
            }
            Op::Slice { .. }
            | Op::Transpose { .. }
            | Op::Rechunk { .. }
            | Op::ExpandDims { .. }
            | Op::Squeeze { .. }
            | Op::ZarrWrite { .. } => 0,
            // Windows are reduced in f64, then cast.
            Op::Rolling { .. } => own.saturating_add(cells(&region_shape(region)) * 8),
            _ => own,
        };
        let mut sum = own;
        for (child, r) in self.child_regions(node, region)? {
            sum = sum.saturating_add(self.eval_bytes(child, &r)?);
        }
        Ok(sum)
    }

    /// The shape and dtype of the chunk task `task` computes from (its output chunk; for
    /// a reduction step, the chunk of the array it reduces; for a run, its first chunk),
    /// and the number of input chunks that takes.
    pub fn task_chunk(&self, task: usize) -> Result<(Vec<usize>, DType, usize)> {
        let root = &self.nodes[self.root()];
        if let Some((x, regions)) = self.partial_runs(task)?
            && let Some(first) = regions.first()
        {
            let inputs = self.needs_of(x, first)?.len();
            return Ok((region_shape(first), self.nodes[x].dtype, inputs));
        }
        let inputs = self.needs(task)?.len();
        Ok(match &root.op {
            Op::Partial { x, .. } | Op::Combine { x, .. } => {
                let [(_, region)] = &self.root_regions(task)?[..] else {
                    return internal_err!("a reduction step has one input");
                };
                (region_shape(region), self.nodes[*x].dtype, inputs)
            }
            _ => (region_shape(&root.grid.region(task)), root.dtype, inputs),
        })
    }

    /// The task of this program that holds the most, and its [`ChunkProgram::task_bytes`].
    pub fn largest_task(&self) -> Result<(usize, usize)> {
        let mut largest = (0, 0);
        for task in 0..self.tasks() {
            let bytes = self.task_bytes(task)?;
            if bytes > largest.1 {
                largest = (task, bytes);
            }
        }
        Ok(largest)
    }
}
