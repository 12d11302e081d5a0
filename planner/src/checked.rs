//! Checks on a stage plan's embedded Arrow IPC streams before anything decodes them.
//!
//! A plan carries in-memory tables and array literals as Arrow IPC streams. Arrow's IPC
//! reader allocates whatever length a message header declares, so a corrupted header can
//! ask for petabytes and abort the process. An abort cannot be caught the way
//! `decode_plan` catches decoder panics. So each stream is walked first, and every
//! declared metadata and body length must fit in the bytes that are actually there.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::ipc::root_as_message;
use datafusion::common::ScalarValue as Scalar;
use datafusion::common::{Result, not_impl_err, plan_err};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::expressions::{CastExpr, Literal};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr_with_converter;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use datafusion_proto::protobuf::ScalarValue;
use datafusion_proto::protobuf::physical_expr_node::ExprType;
use datafusion_proto::protobuf::physical_plan_node::PhysicalPlanType;

/// The IPC stream continuation marker that precedes each message's metadata length.
const CONTINUATION: u32 = 0xFFFF_FFFF;

/// Checks that `bytes` is an Arrow IPC stream whose messages fit in it: each message's
/// metadata is a valid flatbuffer and its declared body lies within the stream. `what`
/// names the stream in the error.
pub fn check_ipc_stream(bytes: &[u8], what: &str) -> Result<()> {
    let mut at = 0;
    loop {
        let word = |at: usize| -> Option<u32> {
            let b = bytes.get(at..at + 4)?;
            Some(u32::from_le_bytes(b.try_into().ok()?))
        };
        // The end of the bytes ends the stream, as Arrow's reader allows.
        let Some(mut len) = word(at) else {
            return Ok(());
        };
        at += 4;
        if len == CONTINUATION {
            let Some(next) = word(at) else {
                return plan_err!(
                    "{what}: the IPC stream ends inside a message header at byte {at}"
                );
            };
            len = next;
            at += 4;
        }
        if len == 0 {
            return Ok(());
        }
        let len = len as usize;
        let Some(metadata) = bytes.get(at..at.saturating_add(len)) else {
            return plan_err!(
                "{what}: an IPC message at byte {at} declares {len} bytes of metadata, \
                 {} are left",
                bytes.len() - at
            );
        };
        at += len;
        let body = check_message(metadata, bytes.len() - at, what)?;
        at += body;
    }
}

/// Checks one IPC message's metadata: a valid flatbuffer, no compression (a compressed
/// buffer declares its own uncompressed length, which Arrow allocates; Shoal never
/// compresses these) and a body within the `left` bytes there are. Returns the body's
/// length.
fn check_message(metadata: &[u8], left: usize, what: &str) -> Result<usize> {
    let message = root_as_message(metadata).map_err(|e| {
        datafusion::common::plan_datafusion_err!("{what}: an IPC message is not valid: {e}")
    })?;
    let compressed = message
        .header_as_record_batch()
        .and_then(|b| b.compression())
        .is_some()
        || message
            .header_as_dictionary_batch()
            .and_then(|d| d.data())
            .and_then(|b| b.compression())
            .is_some();
    if compressed {
        return plan_err!("{what}: an IPC message is compressed, which plans never are");
    }
    let body = message.bodyLength();
    if body < 0 || body as u64 > left as u64 {
        return plan_err!(
            "{what}: an IPC message declares a {body}-byte body, {left} bytes are there"
        );
    }
    Ok(body as usize)
}

/// Checks a literal's embedded IPC messages (nested values: lists, structs, maps).
fn check_scalar(value: &ScalarValue) -> Result<()> {
    use datafusion_proto_common::protobuf_common::scalar_value::Value;
    match &value.value {
        Some(
            Value::ListValue(nested)
            | Value::LargeListValue(nested)
            | Value::FixedSizeListValue(nested)
            | Value::StructValue(nested)
            | Value::MapValue(nested),
        ) => {
            let what = "a nested literal";
            check_message(&nested.ipc_message, nested.arrow_data.len(), what)?;
            for dictionary in &nested.dictionaries {
                check_message(&dictionary.ipc_message, dictionary.arrow_data.len(), what)?;
            }
            Ok(())
        }
        Some(Value::DictionaryValue(dictionary)) => match &dictionary.value {
            Some(inner) => check_scalar(inner),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

std::thread_local! {
    /// The expressions with an id (dynamic filters) decoded so far by the outermost
    /// `decode_plan` on this thread, nested scans included.
    static SHARED_EXPRS: std::cell::RefCell<HashMap<u64, Arc<dyn PhysicalExpr>>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Starts or ends the outermost `decode_plan` on this thread: no expression is shared
/// with another plan's.
pub(crate) fn forget_shared_exprs() {
    SHARED_EXPRS.with(|shared| shared.borrow_mut().clear());
}

/// `decoded`, the expression with id `id`, sharing its state with the expression of the
/// same id decoded earlier in this plan: a join's dynamic filter and the copy a probe-side
/// scan evaluates are one filter again, so what the join sets the scan sees.
pub(crate) fn shared_expr(
    id: u64,
    decoded: Arc<dyn PhysicalExpr>,
) -> Result<Arc<dyn PhysicalExpr>> {
    let earlier = SHARED_EXPRS.with(|shared| shared.borrow().get(&id).cloned());
    match earlier {
        Some(earlier) => {
            let children = decoded.children().into_iter().cloned().collect();
            earlier.with_new_children(children)
        }
        None => {
            SHARED_EXPRS.with(|shared| shared.borrow_mut().insert(id, Arc::clone(&decoded)));
            Ok(decoded)
        }
    }
}

/// Decodes plans like DataFusion's own converter, checking in-memory tables' IPC streams
/// and nested literals first (see the module docs), and mending each decoded node where
/// the wire form lost something (`crate::repair`). It is handed down to every node and
/// expression, so nested ones are checked too.
pub(crate) struct CheckedConverter;

impl PhysicalProtoConverterExtension for CheckedConverter {
    fn proto_to_execution_plan(
        &self,
        proto: &protobuf::PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(PhysicalPlanType::MemoryScan(scan)) = &proto.physical_plan_type {
            for (i, partition) in scan.partitions.iter().enumerate() {
                check_ipc_stream(partition, &format!("partition {i} of an in-memory table"))?;
            }
        }
        let plan = self.default_proto_to_execution_plan(proto, ctx)?;
        crate::repair::repair_decoded(plan)
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<protobuf::PhysicalPlanNode> {
        // DataFusion's protobuf form of a file scan has no place for its compression:
        // a worker would read gzip bytes as text. Refused, so the plan runs in the client.
        if let Some(scan) = plan.downcast_ref::<DataSourceExec>()
            && let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>()
            && config.file_compression_type.is_compressed()
        {
            return not_impl_err!(
                "a scan of {:?}-compressed files cannot be sent to worker processes",
                config.file_compression_type.get_variant()
            );
        }
        protobuf::PhysicalPlanNode::try_from_physical_plan_with_converter(
            Arc::clone(plan),
            codec,
            self,
        )
    }

    fn proto_to_physical_expr(
        &self,
        proto: &protobuf::PhysicalExprNode,
        input_schema: &Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        if let Some(ExprType::Literal(value)) = &proto.expr_type {
            check_scalar(value)?;
        }
        let decoded = self.default_proto_to_physical_expr(proto, input_schema, ctx)?;
        match proto.expr_id {
            Some(id) => shared_expr(id, decoded),
            None => Ok(decoded),
        }
    }

    /// DataFusion's protobuf form keeps a non-null `Float16` literal as a `Float32` value
    /// and decodes it as `Float32`, so an operator typed for `Float16` would meet a
    /// `Float32` column: such a literal travels as a cast of its `Float32` value.
    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<protobuf::PhysicalExprNode> {
        if let Some(literal) = expr.downcast_ref::<Literal>()
            && let Scalar::Float16(Some(v)) = literal.value()
        {
            let wide = Arc::new(Literal::new(Scalar::Float32(Some(f32::from(*v)))));
            let cast: Arc<dyn PhysicalExpr> =
                Arc::new(CastExpr::new(wide, DataType::Float16, None));
            return serialize_physical_expr_with_converter(&cast, codec, self);
        }
        serialize_physical_expr_with_converter(expr, codec, self)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::ipc::writer::StreamWriter;
    use datafusion::arrow::record_batch::RecordBatch;

    use super::*;

    fn stream() -> Vec<u8> {
        let batch =
            RecordBatch::try_from_iter([("a", Arc::new(Int32Array::from(vec![1, 2, 3])) as _)])
                .unwrap();
        let mut bytes = Vec::new();
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        bytes
    }

    #[test]
    fn a_stream_arrow_wrote_passes() {
        check_ipc_stream(&stream(), "t").unwrap();
        check_ipc_stream(&[], "t").unwrap();
    }

    #[test]
    fn lengths_past_the_end_are_refused() {
        let good = stream();
        // The schema message's metadata length, made larger than the stream.
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
        let err = check_ipc_stream(&bad, "literal 0").unwrap_err().to_string();
        assert!(
            err.contains("literal 0: an IPC message at byte 8 declares"),
            "{err}"
        );
        // Cut short: the record batch's body no longer fits.
        let err = check_ipc_stream(&good[..good.len() - 16], "t").unwrap_err();
        assert!(err.to_string().contains("-byte body"), "{err}");
        // Garbage metadata is not a message.
        let mut garbage = good;
        garbage[8..40].fill(0xAB);
        assert!(check_ipc_stream(&garbage, "t").is_err());
    }

    #[test]
    fn compressed_messages_are_refused() {
        use datafusion::arrow::ipc::CompressionType;
        use datafusion::arrow::ipc::writer::IpcWriteOptions;
        let batch =
            RecordBatch::try_from_iter([("a", Arc::new(Int32Array::from(vec![1, 2, 3])) as _)])
                .unwrap();
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .unwrap();
        let mut bytes = Vec::new();
        let mut writer =
            StreamWriter::try_new_with_options(&mut bytes, &batch.schema(), options).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let err = check_ipc_stream(&bytes, "t").unwrap_err().to_string();
        assert!(err.contains("compressed"), "{err}");
    }
}
