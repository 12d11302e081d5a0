//! The network data plane: each worker serves its result store over Arrow Flight
//! (`DoGet` of one bucket); peers and clients fetch buckets over gRPC. Every call must
//! carry the cluster token (`authorization: Bearer <token>`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightClient, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::ipc::writer::{
    DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::{Mutex, RwLock};
use shoal_planner::{PartitionKey, TaskId, WorkerId};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::security::{Security, incoming};
use crate::store::ResultStore;
use crate::transport::{Transport, bucket_stream, fetch_error};

/// Encodes a bucket's key as a Flight ticket.
pub fn ticket_for(key: PartitionKey) -> Ticket {
    let mut bytes = Vec::with_capacity(32);
    for v in [
        key.job,
        key.task.stage as u64,
        key.task.partition as u64,
        key.bucket as u64,
    ] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Ticket::new(bytes)
}

fn key_from(ticket: &Ticket) -> Option<PartitionKey> {
    let b = ticket.ticket.as_ref();
    if b.len() != 32 {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Some(PartitionKey {
        job: word(0),
        task: TaskId {
            stage: word(1) as usize,
            partition: word(2) as usize,
        },
        bucket: word(3) as usize,
    })
}

/// Serves one worker's result store.
#[derive(Debug, Clone)]
pub struct StoreFlightService {
    store: Arc<ResultStore>,
    security: Arc<Security>,
}

impl StoreFlightService {
    /// A service for `store`, answering only calls that carry the token of `security`.
    pub fn new(store: Arc<ResultStore>, security: Arc<Security>) -> Self {
        Self { store, security }
    }

    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        self.security.check(request)
    }
}

/// Whether batches of `schema` can be sent as Arrow IPC: no column, at any depth, is a
/// dictionary whose values are themselves dictionaries (IPC has no field layout for that
/// type, so a worker could compute such a column but never hand it on).
pub fn ipc_carries(schema: &Schema) -> bool {
    fn carries(data_type: &DataType) -> bool {
        match data_type {
            DataType::Dictionary(_, values) => {
                !matches!(values.as_ref(), DataType::Dictionary(..)) && carries(values)
            }
            DataType::List(f)
            | DataType::LargeList(f)
            | DataType::ListView(f)
            | DataType::LargeListView(f)
            | DataType::FixedSizeList(f, _)
            | DataType::Map(f, _) => carries(f.data_type()),
            DataType::Struct(fields) => fields.iter().all(|f| carries(f.data_type())),
            DataType::Union(fields, _) => fields.iter().all(|(_, f)| carries(f.data_type())),
            DataType::RunEndEncoded(_, values) => carries(values.data_type()),
            _ => true,
        }
    }
    schema.fields().iter().all(|f| carries(f.data_type()))
}

/// The Flight messages of `batches`: their schema exactly as it is (dictionary columns
/// stay dictionaries, so the reader gets the schema the plan declares), then each batch
/// with the dictionaries it needs, encoded as it is sent. Not arrow-flight's encoder:
/// it declares a `LargeList` column as a `List`, which the reader then decodes from
/// 64-bit offsets as if they were 32-bit (wrong lists, or an invalid batch).
fn flight_messages(
    first: Option<RecordBatch>,
    rest: impl Stream<Item = Result<RecordBatch, Status>>,
) -> impl Stream<Item = Result<FlightData, Status>> {
    let options = IpcWriteOptions::default();
    let generator = IpcDataGenerator::default();
    let mut dictionaries = DictionaryTracker::new(false);
    // Encoding the schema assigns the dictionary ids the batches refer to.
    let schema = first.as_ref().map(|b| {
        let schema = generator.schema_to_bytes_with_dictionary_tracker(
            &b.schema(),
            &mut dictionaries,
            &options,
        );
        FlightData::from(schema)
    });
    let mut context = IpcWriteContext::default();
    let batches = futures::stream::iter(first.map(Ok)).chain(rest);
    let encoded = batches.flat_map(move |batch| {
        let batch = match batch {
            Ok(batch) => batch,
            Err(status) => return futures::stream::iter(vec![Err(status)]),
        };
        let messages = match generator.encode(&batch, &mut dictionaries, &options, &mut context) {
            Ok((dictionaries, batch)) => dictionaries
                .into_iter()
                .chain([batch])
                .map(|m| Ok(FlightData::from(m)))
                .collect(),
            // Encoding these rows fails again on every attempt: not a lost peer.
            Err(e) => vec![Err(Status::failed_precondition(format!(
                "cannot send these rows as Arrow IPC: {e}"
            )))],
        };
        futures::stream::iter(messages)
    });
    futures::stream::iter(schema.map(Ok)).chain(encoded)
}

type BoxedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn unsupported<T>(call: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{call} is not part of Shoal's data plane; use DoGet"
    )))
}

#[tonic::async_trait]
impl FlightService for StoreFlightService {
    type HandshakeStream = BoxedStream<HandshakeResponse>;
    type ListFlightsStream = BoxedStream<FlightInfo>;
    type DoGetStream = BoxedStream<FlightData>;
    type DoPutStream = BoxedStream<PutResult>;
    type DoExchangeStream = BoxedStream<FlightData>;
    type DoActionStream = BoxedStream<arrow_flight::Result>;
    type ListActionsStream = BoxedStream<ActionType>;

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.check(&request)?;
        let key = key_from(request.get_ref()).ok_or_else(|| {
            Status::invalid_argument("a Shoal ticket is 32 bytes: job, stage, task, bucket")
        })?;
        // Reading a spill file and compacting views take time in proportion to the
        // output: off the runtime that also carries the worker's heartbeats, a batch at a
        // time (a spilled bucket is never read whole), until the fetch is dropped.
        let batches = self
            .store
            .batches(&key)
            .map_err(|e| Status::not_found(e.to_string()))?;
        self.store.note_flight_read();
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            let mut batches = batches;
            loop {
                // A panic reading the bucket (a damaged spill file) must end the stream
                // with an error: a stream that just stops would lose rows unnoticed.
                let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    batches.next().map(|batch| {
                        batch
                            .and_then(|b| crate::store::compact_views(&b))
                            .map_err(|e| Status::internal(e.to_string()))
                    })
                }));
                let batch = match next {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(panic) => Err(Status::internal(format!(
                        "reading the bucket panicked: {}",
                        crate::panic_message(panic)
                    ))),
                };
                let failed = batch.is_err();
                if tx.blocking_send(batch).is_err() || failed {
                    break;
                }
            }
        });
        let first = rx.recv().await.transpose()?;
        let rest = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(flight_messages(first, rest))))
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unsupported("Handshake")
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported("ListFlights")
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unsupported("GetFlightInfo")
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unsupported("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unsupported("GetSchema")
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unsupported("DoPut")
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unsupported("DoExchange")
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unsupported("DoAction")
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported("ListActions")
    }
}

/// Serves `service` on `listener` until the runtime stops.
pub async fn serve(
    service: StoreFlightService,
    listener: tokio::net::TcpListener,
    security: &Security,
) -> Result<()> {
    security
        .server()?
        .add_service(FlightServiceServer::new(service).max_encoding_message_size(usize::MAX))
        .serve_with_incoming(incoming(listener))
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))
}

/// Fetches buckets over Flight from the workers that hold them; outputs of workers in
/// this process are put into (and, unless every read must go over the network, read
/// from) their stores directly.
#[derive(Debug)]
pub struct FlightTransport {
    local: HashMap<WorkerId, Arc<ResultStore>>,
    local_reads: bool,
    addresses: RwLock<HashMap<WorkerId, String>>,
    security: Arc<Security>,
    channels: Mutex<HashMap<WorkerId, Channel>>,
    /// Channels run their connection tasks here, not on whichever runtime first fetched.
    runtime: tokio::runtime::Handle,
}

impl FlightTransport {
    /// A transport for the workers of this process (`local`, by id) that reaches every
    /// worker at its address. With `local_reads`, buckets held here skip the network.
    pub fn new(
        local: HashMap<WorkerId, Arc<ResultStore>>,
        local_reads: bool,
        security: Arc<Security>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            local,
            local_reads,
            addresses: RwLock::new(HashMap::new()),
            security,
            channels: Mutex::new(HashMap::new()),
            runtime,
        }
    }

    /// Worker `worker` serves its outputs at `address` (`host:port`).
    pub fn set_address(&self, worker: WorkerId, address: String) {
        self.channels.lock().remove(&worker);
        self.addresses.write().insert(worker, address);
    }

    /// Like [`Self::set_address`], keeping the open channel when the address is known.
    pub fn set_address_if_new(&self, worker: WorkerId, address: String) {
        if self.addresses.read().get(&worker) != Some(&address) {
            self.set_address(worker, address);
        }
    }

    fn channel(&self, worker: WorkerId) -> Result<Channel> {
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(&worker) {
            return Ok(channel.clone());
        }
        let address = self
            .addresses
            .read()
            .get(&worker)
            .cloned()
            .ok_or_else(|| fetch_error(worker, "its address is unknown"))?;
        let _entered = self.runtime.enter();
        let channel = self.security.endpoint(&address)?.connect_lazy();
        channels.insert(worker, channel.clone());
        Ok(channel)
    }
}

fn flight_error(from: WorkerId, e: FlightError) -> DataFusionError {
    match &e {
        // Tonic's own text repeats its whole source chain in debug form: say what the
        // call said, then the innermost cause ("connection refused").
        // The peer holds the rows but cannot encode them: fetching again, or computing
        // them again, gives the same error.
        FlightError::Tonic(status) if status.code() == tonic::Code::FailedPrecondition => {
            DataFusionError::Execution(format!(
                "worker {from} could not send its output: {}",
                status.message()
            ))
        }
        FlightError::Tonic(status) => {
            let mut innermost: Option<&dyn std::error::Error> = None;
            let mut next = std::error::Error::source(status.as_ref());
            while let Some(cause) = next {
                innermost = Some(cause);
                next = cause.source();
            }
            match innermost {
                Some(cause) => fetch_error(from, format!("{}: {cause}", status.message())),
                None => fetch_error(from, status.message()),
            }
        }
        _ => fetch_error(from, e),
    }
}

impl Transport for FlightTransport {
    fn local_store(&self, worker: WorkerId) -> Result<&Arc<ResultStore>> {
        self.local
            .get(&worker)
            .ok_or_else(|| DataFusionError::Execution(format!("worker {worker} is not here")))
    }

    fn fetch(&self, key: PartitionKey, from: WorkerId) -> Result<SendableRecordBatchStream> {
        tracing::debug!(?key, from, "fetch");
        if self.local_reads
            && let Some(store) = self.local.get(&from)
        {
            return bucket_stream(store.batches(&key)?);
        }
        fetch_bucket(self.channel(from)?, &self.security, key, from)
    }
}

/// Streams bucket `key` from worker `from` over `channel`.
pub fn fetch_bucket(
    channel: Channel,
    security: &Security,
    key: PartitionKey,
    from: WorkerId,
) -> Result<SendableRecordBatchStream> {
    // A single batch can be larger than tonic's default 4 MiB message limit.
    let inner = FlightServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let mut client = FlightClient::new_from_inner(inner);
    if let Some(bearer) = security.bearer() {
        client
            .add_header("authorization", &bearer)
            .map_err(|e| flight_error(from, e))?;
    }
    let batches = futures::stream::once(async move {
        let stream = client
            .do_get(ticket_for(key))
            .await
            .map_err(|e| flight_error(from, e))?;
        Ok::<_, DataFusionError>(stream.map_err(move |e| flight_error(from, e)))
    })
    .try_flatten();
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        Arc::new(Schema::empty()),
        batches.boxed(),
    )))
}
