//! Partial steps over runs of chunks: a task of a partial stage whose `run` is set
//! reduces several chunks of its input, one at a time, into one set of states. A groupby
//! whose chunks each touch a few of many groups keeps a state for every group per task,
//! so fewer, longer tasks mean fewer such states to store and merge; reading one chunk at
//! a time keeps the task's memory at one chunk and two sets of states.

use datafusion_common::{Result, internal_err};

use crate::chunk::NdChunk;
use crate::grid::Region;
use crate::kernels;
use crate::ops::{Op, ReduceSpec};
use crate::program::{ChunkProgram, Fetched, pieces};
use crate::reduce;

impl ChunkProgram {
    /// When task `task` is a partial step over a run of chunks: the node it reduces and
    /// the region of each chunk of that node in the run, in order.
    pub fn partial_runs(&self, task: usize) -> Result<Option<(usize, Vec<Region>)>> {
        let Op::Partial { x, run, .. } = &self.nodes[self.root()].op else {
            return Ok(None);
        };
        if run.iter().all(|&r| r <= 1) {
            return Ok(None);
        }
        let [(_, region)] = &self.root_regions(task)?[..] else {
            return internal_err!("a partial reduction has one input");
        };
        let grid = &self.nodes[*x].grid;
        let regions = pieces(grid, region)
            .into_iter()
            .map(|(coords, _, _)| grid.region(grid.index(&coords)))
            .collect();
        Ok(Some((*x, regions)))
    }

    /// The input chunks evaluating node `node` over `region` reads: (node, chunk).
    pub fn needs_of(&self, node: usize, region: &Region) -> Result<Vec<(usize, usize)>> {
        let mut out = Vec::new();
        self.collect_needs(node, region, &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The spec of the root's partial step, never finalizing: what runs merge.
    fn run_spec(&self) -> Result<ReduceSpec> {
        let Op::Partial { reduce, .. } = &self.nodes[self.root()].op else {
            return internal_err!("not a partial step");
        };
        Ok(ReduceSpec {
            finalize: false,
            ..reduce.clone()
        })
    }

    /// The states of one chunk `region` of node `x` in a run.
    pub fn piece_states(
        &self,
        x: usize,
        region: &Region,
        fetched: &Fetched,
    ) -> Result<Vec<NdChunk>> {
        self.partial_states(x, region, &self.run_spec()?, fetched)
    }

    /// `states` merged with the states of the next chunk of the run.
    pub fn merge_states(
        &self,
        states: Option<Vec<NdChunk>>,
        next: Vec<NdChunk>,
    ) -> Result<Vec<NdChunk>> {
        let Some(states) = states else {
            return Ok(next);
        };
        let Op::Partial { run, .. } = &self.nodes[self.root()].op else {
            return internal_err!("not a partial step");
        };
        // Runs go along one axis: the states of consecutive chunks lie side by side on it.
        let Some(axis) = run.iter().position(|&r| r > 1) else {
            return internal_err!("a partial step without a run");
        };
        let joined = states
            .iter()
            .zip(&next)
            .map(|(a, b)| kernels::concat(&[a.clone(), b.clone()], axis))
            .collect::<Result<Vec<_>>>()?;
        reduce::combine(&self.run_spec()?, &joined)
    }

    /// The output columns of a run from its merged states (values, when the step is the
    /// reduction's last).
    pub fn finish_states(
        &self,
        states: Option<Vec<NdChunk>>,
    ) -> Result<Vec<(&'static str, NdChunk)>> {
        let Op::Partial { reduce, .. } = &self.nodes[self.root()].op else {
            return internal_err!("not a partial step");
        };
        let Some(states) = states else {
            return internal_err!("a run without chunks");
        };
        let columns = if reduce.finalize {
            vec![reduce::finalize(reduce, &states)?]
        } else {
            states
        };
        let names = self.output_fields().into_iter().map(|f| f.0);
        Ok(names.zip(columns).collect())
    }
}
