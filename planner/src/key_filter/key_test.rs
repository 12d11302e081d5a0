//! What a probe row must pass, from the build tasks' key summaries.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt8Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Schema, UInt8Type};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::functions_aggregate::min_max::{MaxAccumulator, MinAccumulator};
use datafusion::logical_expr::{Accumulator, ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, InListExpr, lit};
use datafusion::physical_expr::{PhysicalExpr, PhysicalExprRef, conjunction};

use super::bloom::{Bloom, key_hashes};
use super::{PROBE_KEYS, bloom_log2, kind, payloads};

/// What a probe row must pass: a predicate over its keys, and their hash must be in the
/// Bloom filter when there is one.
pub(super) struct KeyTest {
    keys: Vec<PhysicalExprRef>,
    predicate: Option<Arc<dyn PhysicalExpr>>,
    bloom: Option<Bloom>,
    /// The part of the predicate that bounds each key (`false`: no key can match), for
    /// scans to skip row groups by; `None` when every row passes.
    pub(super) bounds: Option<Arc<dyn PhysicalExpr>>,
}

impl KeyTest {
    fn keep_all(keys: &[PhysicalExprRef]) -> Self {
        Self::of(keys, None, None)
    }

    /// Keeps no row.
    fn keep_none(keys: &[PhysicalExprRef]) -> Self {
        Self::of(keys, Some(lit(false)), None).bounded_by(lit(false))
    }

    fn bounded_by(mut self, bounds: Arc<dyn PhysicalExpr>) -> Self {
        self.bounds = Some(bounds);
        self
    }

    /// Keeps every row from now on.
    pub(super) fn give_up(&mut self) {
        (self.predicate, self.bloom) = (None, None);
    }

    fn of(
        keys: &[PhysicalExprRef],
        predicate: Option<Arc<dyn PhysicalExpr>>,
        bloom: Option<Bloom>,
    ) -> Self {
        Self {
            keys: keys.to_vec(),
            predicate,
            bloom,
            bounds: None,
        }
    }

    /// The rows of `batch` that pass.
    pub(super) fn keep(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let mut mask = match &self.predicate {
            None => None,
            Some(predicate) => match predicate.evaluate(&batch)? {
                ColumnarValue::Array(mask) => Some(mask.as_boolean().clone()),
                ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))) => None,
                ColumnarValue::Scalar(_) => return Ok(batch.slice(0, 0)),
            },
        };
        if let Some(bloom) = &self.bloom {
            let columns = self
                .keys
                .iter()
                .map(|k| k.evaluate(&batch)?.into_array(rows))
                .collect::<Result<Vec<_>>>()?;
            let passed: BooleanArray = key_hashes(&columns, rows)?
                .into_iter()
                .map(|h| Some(bloom.contains(h)))
                .collect();
            mask = Some(match mask {
                Some(mask) => datafusion::arrow::compute::and(&mask, &passed)?,
                None => passed,
            });
        }
        match mask {
            Some(mask) => Ok(filter_record_batch(&batch, &mask)?),
            None => Ok(batch),
        }
    }
}

/// The test the build tasks' summaries give over probe keys `probe` (the same types as
/// the build keys, evaluated on `schema`).
pub(super) fn key_test(
    summaries: &[RecordBatch],
    probe: &[PhysicalExprRef],
    schema: &Schema,
) -> Result<KeyTest> {
    let (mut mins, mut maxs): (Vec<Vec<ArrayRef>>, Vec<Vec<ArrayRef>>) =
        (vec![Vec::new(); probe.len()], vec![Vec::new(); probe.len()]);
    let mut keys: Vec<Vec<ArrayRef>> = vec![Vec::new(); probe.len()];
    let (mut listed, mut many, mut rows) = (0, false, 0);
    for batch in summaries {
        let Some(kinds) = batch.column_by_name("kind") else {
            return internal_err!("a key summary without kinds");
        };
        if batch.num_columns() != probe.len() + 2 {
            return internal_err!(
                "a key summary of {} columns for {} keys",
                batch.num_columns(),
                probe.len()
            );
        }
        let kinds = kinds.as_primitive::<UInt8Type>();
        rows += batch.num_rows();
        for (value, wanted) in [
            (kind::MIN, &mut mins),
            (kind::MAX, &mut maxs),
            (kind::KEY, &mut keys),
        ] {
            let mask = datafusion::arrow::compute::kernels::cmp::eq(
                kinds,
                &UInt8Array::new_scalar(value),
            )?;
            for (i, out) in wanted.iter_mut().enumerate() {
                out.push(datafusion::arrow::compute::filter(batch.column(i), &mask)?);
            }
        }
        for k in kinds.values().iter() {
            match *k {
                kind::UNKNOWN => return Ok(KeyTest::keep_all(probe)),
                kind::MANY => many = true,
                kind::KEY => listed += 1,
                _ => {}
            }
        }
    }
    if rows == 0 {
        // No build rows: nothing joins.
        return Ok(KeyTest::keep_none(probe));
    }
    let mut conjuncts: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    let mut bounds: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    for (i, key) in probe.iter().enumerate() {
        let data_type = key.data_type(schema)?;
        let (mut min, mut max) = (
            MinAccumulator::try_new(&data_type)?,
            MaxAccumulator::try_new(&data_type)?,
        );
        for values in &mins[i] {
            min.update_batch(std::slice::from_ref(values))?;
        }
        for values in &maxs[i] {
            max.update_batch(std::slice::from_ref(values))?;
        }
        let (low, high) = (min.evaluate()?, max.evaluate()?);
        if low.is_null() || high.is_null() {
            // Only NULL keys, which match nothing.
            return Ok(KeyTest::keep_none(probe));
        }
        bounds.push(Arc::new(BinaryExpr::new(
            Arc::clone(key),
            Operator::GtEq,
            lit(low),
        )));
        bounds.push(Arc::new(BinaryExpr::new(
            Arc::clone(key),
            Operator::LtEq,
            lit(high),
        )));
        conjuncts.extend(bounds[bounds.len() - 2..].iter().cloned());
        if !many && listed <= PROBE_KEYS {
            let refs: Vec<&dyn Array> = keys[i].iter().map(|a| a.as_ref()).collect();
            let values = datafusion::arrow::compute::concat(&refs)?;
            conjuncts.push(Arc::new(InListExpr::try_new_from_array(
                Arc::clone(key),
                values,
                false,
                schema,
            )?));
        }
    }
    // Keys listed by every task but too many to test one by one go into a Bloom filter
    // too.
    let bloom = match many || listed > PROBE_KEYS {
        true => Some(bloom_of(summaries, &keys, listed)?),
        false => None,
    };
    Ok(KeyTest::of(probe, Some(conjunction(conjuncts)), bloom).bounded_by(conjunction(bounds)))
}

/// The union of the build tasks' Bloom filters, with the keys of the tasks that listed
/// theirs instead (`keys`, per key column; `listed` in all) added: every build key passes.
fn bloom_of(summaries: &[RecordBatch], keys: &[Vec<ArrayRef>], listed: usize) -> Result<Bloom> {
    let mut union: Option<Bloom> = None;
    for batch in summaries {
        for bytes in payloads(batch, kind::BLOOM)? {
            match &mut union {
                Some(bloom) => bloom.union_bytes(bytes)?,
                None => union = Some(Bloom::from_bytes(bytes)?),
            }
        }
    }
    let mut bloom = union.unwrap_or_else(|| Bloom::new(bloom_log2(listed)));
    // Each task's listed keys, column by column.
    let tasks = keys.first().map_or(0, Vec::len);
    for task in 0..tasks {
        let columns: Vec<ArrayRef> = keys.iter().map(|k| Arc::clone(&k[task])).collect();
        let rows = columns.first().map_or(0, |c| c.len());
        for hash in key_hashes(&columns, rows)? {
            bloom.insert(hash);
        }
    }
    Ok(bloom)
}
