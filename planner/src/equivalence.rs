//! What a shuffle read knows about its rows besides their ordering: columns that are
//! constant and expressions that are equal, as the exchange it replaced knew them.
//!
//! Operators above a read decide at construction how to run from these facts: a window
//! partitioned by a column that a filter below fixed to one value runs without a sort.
//! On a worker, the stage is decoded and those operators are built again over the read,
//! so the read must carry the facts across, or they fail there ("Expects PARTITION BY
//! expression to be ordered").

use datafusion::arrow::datatypes::Schema;
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::equivalence::{AcrossPartitions, ConstExpr};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;

/// One class of equal expressions, and whether they are constant.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EquivalenceProto {
    #[prost(message, repeated, tag = "1")]
    exprs: Vec<protobuf::PhysicalExprNode>,
    /// 0: not constant; 1: constant within each partition; 2: one value in every
    /// partition, which is `value` when known.
    #[prost(uint32, tag = "2")]
    constant: u32,
    #[prost(message, optional, tag = "3")]
    value: Option<protobuf::ScalarValue>,
}

const NOT_CONSTANT: u32 = 0;
const CONSTANT_PER_PARTITION: u32 = 1;
const CONSTANT_EVERYWHERE: u32 = 2;

/// The equivalence classes of `eq` (equal expressions and constants).
pub(crate) fn encode_equivalences(
    eq: &EquivalenceProperties,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<Vec<EquivalenceProto>> {
    eq.eq_group()
        .iter()
        .map(|class| {
            let exprs = class
                .iter()
                .map(|e| converter.physical_expr_to_proto(e, codec))
                .collect::<Result<_>>()?;
            let constant = class
                .canonical_expr()
                .and_then(|e| eq.eq_group().is_expr_constant(e));
            let (constant, value) = match &constant {
                None => (NOT_CONSTANT, None),
                Some(AcrossPartitions::Heterogeneous) => (CONSTANT_PER_PARTITION, None),
                Some(AcrossPartitions::Uniform(value)) => (
                    CONSTANT_EVERYWHERE,
                    value
                        .as_ref()
                        .map(protobuf::ScalarValue::try_from)
                        .transpose()?,
                ),
            };
            Ok(EquivalenceProto {
                exprs,
                constant,
                value,
            })
        })
        .collect()
}

/// Adds the classes `encoded` to `eq`, whose schema the expressions refer to.
pub(crate) fn decode_equivalences(
    encoded: &[EquivalenceProto],
    eq: &mut EquivalenceProperties,
    ctx: &PhysicalPlanDecodeContext<'_>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<()> {
    let schema: Schema = eq.schema().as_ref().clone();
    for class in encoded {
        let exprs = class
            .exprs
            .iter()
            .map(|e| converter.proto_to_physical_expr(e, &schema, ctx))
            .collect::<Result<Vec<_>>>()?;
        let across = match class.constant {
            NOT_CONSTANT => None,
            CONSTANT_PER_PARTITION => Some(AcrossPartitions::Heterogeneous),
            CONSTANT_EVERYWHERE => Some(AcrossPartitions::Uniform(
                class
                    .value
                    .as_ref()
                    .map(ScalarValue::try_from)
                    .transpose()?,
            )),
            other => return plan_err!("unknown constant kind {other} in a shuffle read"),
        };
        if let Some(across) = across {
            eq.add_constants(
                exprs
                    .iter()
                    .map(|e| ConstExpr::new(e.clone(), across.clone())),
            )?;
        }
        for pair in exprs.windows(2) {
            eq.add_equal_conditions(pair[0].clone(), pair[1].clone())?;
        }
    }
    Ok(())
}
