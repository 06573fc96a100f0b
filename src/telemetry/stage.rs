//! The telemetry stage: turns exchange records and connection activity into OTLP spans, logs
//! and metrics, one resource per workload. Owns the workloads (their resources, route
//! templates and metric series) and the spans and logs waiting to be sent.

use foldhash::HashMap;
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime},
};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    metrics::v1::{ResourceMetrics, ScopeMetrics},
    resource::v1::Resource,
};
use prost::Message as _;

use crate::{
    attribution::ProcessCache,
    config::export::{AccessLogAttributes, SignalKind, Signals},
    connections::{ActivityKind, ConnectionActivity},
    protocols::Role,
    telemetry::{
        ExchangeRecord,
        http::{metric_attributes, span_attributes},
        kernel,
        logs::{LEAN_LOG_ATTRIBUTES, encode_access_log},
        metrics::{Instrument, Measurement, MetricSet, SpanIds},
        otlp::{Attrs, Payload, SCHEMA_URL, scope},
        peer::{KubeView, PeerCache, PeerInfo},
        resource::{Resources, without_process},
        route::Routes,
        rpc,
        spans::{Identity, encode_span, identity, unix_nanos},
        split::split_metrics,
        trace_context::IdGenerator,
        wire::{WireAttrs, put_bytes, put_len_header, varint_len},
    },
};

/// What the stage needs to know.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub host: String,
    pub resource_attributes: BTreeMap<String, String>,
    pub max_routes_per_workload: usize,
    pub max_series_per_metric: usize,
    pub delta: bool,
    /// Which signals to build.
    pub signals: Signals,
    /// A workload with no activity for this long is forgotten (its series end).
    pub workload_ttl: Duration,
    /// Also emit the experimental RPC attributes (`rpc/dup`).
    pub rpc_legacy_attributes: bool,
    /// `network.peer.address` on connection and kernel metrics (`export.peer_addresses_on_metrics`).
    pub peer_addresses_on_metrics: bool,
    /// Which of the span's attributes the access log repeats (`export.access_log_attributes`).
    pub access_log_attributes: AccessLogAttributes,
    /// Largest metrics request; larger ones are split (`export.metric_request_max_bytes`).
    pub metric_request_max_bytes: usize,
    /// The kernel's names of its packet drop reasons (others are reported by number).
    pub drop_reasons: Arc<BTreeMap<u32, String>>,
    /// The Kubernetes watches, when netsonde runs in (or is pointed at) a cluster.
    pub kube: Option<KubeView>,
}

/// A process, known by pid and name (a pid reused by another program is another process).
type WorkloadKey = (u32, Arc<str>);

/// Whose metric series a record goes to: the container of a pod (all its processes
/// together, as the pod's `service.instance.id` names the container: nginx's or gunicorn's
/// workers are one instance), or a process outside any pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum MetricOwner {
    Container {
        pod_uid: Arc<str>,
        container: Option<Arc<str>>,
    },
    Process(WorkloadKey),
}

/// A traced process: the resource of its spans and logs, and whose metrics it adds to.
struct Workload {
    /// In a container the index did not know yet: the index generation it was asked at.
    /// The resource is built again once the index has moved on.
    awaiting_pod: Option<u64>,
    /// The resource, protobuf-encoded once.
    resource_bytes: Vec<u8>,
    owner: MetricOwner,
    last_active: SystemTime,
}

/// The metric series of one owner, with its resource and its route templates.
struct Series {
    resource: Resource,
    routes: Routes,
    metrics: MetricSet,
    last_active: SystemTime,
}

/// Spans and logs waiting to be sent, already encoded as the repeated field of their
/// `ScopeSpans` / `ScopeLogs` (tag, length, message).
#[derive(Default)]
struct Pending {
    spans: Vec<u8>,
    span_count: u64,
    logs: Vec<u8>,
    log_count: u64,
}

/// Reused buffers, so encoding an exchange allocates nothing in the steady state.
#[derive(Default)]
struct Scratch {
    attributes: WireAttrs,
    /// The access log's share of `attributes`, when it does not repeat them all.
    log_attributes: WireAttrs,
    message: Vec<u8>,
    line: String,
    ids: IdGenerator,
}

pub struct Telemetry {
    settings: TelemetrySettings,
    resources: Resources,
    processes: ProcessCache,
    /// Peers by address (in Kubernetes).
    peers: Option<PeerCache>,
    workloads: HashMap<WorkloadKey, Workload>,
    series: HashMap<MetricOwner, Series>,
    pending: HashMap<WorkloadKey, Pending>,
    pending_exchanges: usize,
    scratch: Scratch,
    /// The instrumentation scope, encoded once.
    scope_bytes: Vec<u8>,
    /// When metrics were last collected (unix ns), the start of a delta interval.
    last_collect: u64,
}

impl Telemetry {
    pub fn new(settings: TelemetrySettings, now: SystemTime) -> Self {
        Telemetry {
            resources: Resources::new(settings.host.clone(), settings.resource_attributes.clone())
                .with_cluster_name(settings.kube.as_ref().and_then(|k| k.cluster_name.clone())),
            peers: settings.kube.clone().map(PeerCache::new),
            settings,
            processes: ProcessCache::new(4096),
            workloads: HashMap::default(),
            series: HashMap::default(),
            pending: HashMap::default(),
            pending_exchanges: 0,
            scratch: Scratch::default(),
            scope_bytes: scope().encode_to_vec(),
            last_collect: unix_nanos(now),
        }
    }

    /// The series `pid`'s records go to. Places the process first if it is new, if its pod
    /// was not known when it was placed and the index has changed since, or if its series
    /// were forgotten while its spans waited.
    fn series(
        &mut self,
        pid: u32,
        comm: &Arc<str>,
        cgroup_id: u64,
        now: SystemTime,
    ) -> &mut Series {
        let key = (pid, comm.clone());
        let kube = self.peers.as_ref().map(PeerCache::view);
        let generation = kube.map(|k| k.generation.load(Relaxed));
        let placed = self.workloads.get(&key).is_some_and(|w| {
            let index_moved = w
                .awaiting_pod
                .is_some_and(|asked| generation.is_some_and(|g| g != asked));
            !index_moved && self.series.contains_key(&w.owner)
        });
        if !placed {
            let place = place(
                &self.resources,
                kube,
                (pid, comm, cgroup_id),
                &mut self.processes,
            );
            let resource_bytes = place.resource.encode_to_vec();
            let owner = place.owner.clone();
            self.series.entry(owner.clone()).or_insert_with(|| Series {
                resource: place.metric_resource(),
                routes: Routes::default(),
                metrics: MetricSet::default(),
                last_active: now,
            });
            let workload = Workload {
                awaiting_pod: place.awaiting_pod,
                resource_bytes,
                owner,
                last_active: now,
            };
            self.workloads.insert(key.clone(), workload);
        }
        let workload = self.workloads.get_mut(&key).expect("placed above");
        workload.last_active = now;
        let series = self.series.get_mut(&workload.owner).expect("placed above");
        series.last_active = now;
        series
    }

    /// Spans, access logs and request metrics of finished exchanges. Each record gets its
    /// peer's identity here (in Kubernetes), so the console shows what was exported.
    pub fn add_exchanges(&mut self, records: &mut [ExchangeRecord], now: SystemTime) {
        if let Some(peers) = &mut self.peers {
            let at = std::time::Instant::now();
            for r in records.iter_mut() {
                r.peer = r.remote.and_then(|a| peers.lookup(a.ip(), at));
            }
        }
        let max_routes = self.settings.max_routes_per_workload;
        let max_series = self.settings.max_series_per_metric;
        let Signals {
            traces,
            metrics,
            logs,
        } = self.settings.signals;
        for r in records {
            // The span's ids, chosen before the metrics so that the duration's exemplar
            // points at it (only when spans are sent: an exemplar must name a real span).
            let id = (traces || logs).then(|| identity(r, &mut self.scratch.ids));
            let exemplar = id.as_ref().filter(|_| traces).map(|id| SpanIds {
                trace_id: id.trace_id,
                span_id: id.span_id,
            });
            let series = self.series(r.pid, &r.comm, r.cgroup_id, now);
            if let Some(call) = &r.rpc {
                // An RPC's method is its name: no template to guess.
                if metrics {
                    let duration = match r.role {
                        Role::Server => Instrument::RpcServerDuration,
                        Role::Client => Instrument::RpcClientDuration,
                    };
                    let attrs = rpc::metric_attributes(r, call);
                    let seconds = r.duration().as_secs_f64();
                    let end = unix_nanos(r.end);
                    series
                        .metrics
                        .record_traced(duration, &attrs, seconds, end, max_series, exemplar);
                }
                if let Some(id) = &id {
                    self.scratch.attributes.clear();
                    rpc::span_attributes(r, call, &mut self.scratch.attributes);
                    if self.settings.rpc_legacy_attributes {
                        rpc::legacy_attributes(call, &mut self.scratch.attributes);
                    }
                    self.encode_span_and_log(r, id, None, now);
                }
                continue;
            }
            let route = series.routes.route(&r.target, max_routes);
            if metrics {
                let end = unix_nanos(r.end);
                let attrs = metric_attributes(r, &route);
                let (duration, req_size, resp_size) = match r.role {
                    Role::Server => (
                        Instrument::HttpServerDuration,
                        Instrument::HttpServerRequestBodySize,
                        Instrument::HttpServerResponseBodySize,
                    ),
                    Role::Client => (
                        Instrument::HttpClientDuration,
                        Instrument::HttpClientRequestBodySize,
                        Instrument::HttpClientResponseBodySize,
                    ),
                };
                let measurements = [
                    Measurement {
                        inst: duration,
                        value: r.duration().as_secs_f64(),
                        span: exemplar,
                    },
                    Measurement {
                        inst: req_size,
                        value: r.request_body_bytes as f64,
                        span: None,
                    },
                    Measurement {
                        inst: resp_size,
                        value: r.response_body_bytes as f64,
                        span: None,
                    },
                ];
                series
                    .metrics
                    .record_each(&attrs, &measurements, end, max_series);
            }
            if let Some(id) = &id {
                self.scratch.attributes.clear();
                span_attributes(r, &route, &mut self.scratch.attributes);
                self.encode_span_and_log(r, id, Some(&route), now);
            }
        }
    }

    /// Encodes the span and the access log of `r` from the attributes in the scratch space.
    /// The access log carries the span's ids and attributes: both are encoded from the same
    /// identity and attribute bytes.
    fn encode_span_and_log(
        &mut self,
        r: &ExchangeRecord,
        id: &Identity,
        route: Option<&str>,
        now: SystemTime,
    ) {
        let Signals { traces, logs, .. } = self.settings.signals;
        let scratch = &mut self.scratch;
        kernel::span_attributes(&r.kernel, &mut scratch.attributes);
        let pending = self.pending.entry((r.pid, r.comm.clone())).or_default();
        if traces {
            scratch.message.clear();
            encode_span(&mut scratch.message, r, id, route, &scratch.attributes);
            put_bytes(&mut pending.spans, 2, &scratch.message);
            pending.span_count += 1;
        }
        if logs {
            let attributes = match self.settings.access_log_attributes {
                AccessLogAttributes::All => &scratch.attributes,
                AccessLogAttributes::Lean => {
                    let lean = &mut scratch.log_attributes;
                    scratch
                        .attributes
                        .retain_into(lean, |key| LEAN_LOG_ATTRIBUTES.contains(&key));
                    &*lean
                }
            };
            scratch.message.clear();
            encode_access_log(
                &mut scratch.message,
                r,
                id,
                attributes,
                now,
                &mut scratch.line,
            );
            put_bytes(&mut pending.logs, 2, &scratch.message);
            pending.log_count += 1;
        }
        self.pending_exchanges += 1;
    }

    /// Connection metrics.
    pub fn add_activity(&mut self, activity: &[ConnectionActivity], now: SystemTime) {
        if !self.settings.signals.metrics {
            return;
        }
        let max_series = self.settings.max_series_per_metric;
        let t = unix_nanos(now);
        let reasons = self.settings.drop_reasons.clone();
        let at = std::time::Instant::now();
        for a in activity {
            let peer = self
                .peers
                .as_mut()
                .and_then(|p| a.remote.and_then(|r| p.lookup(r.ip(), at)));
            let attrs =
                connection_attributes(a, peer.as_deref(), self.settings.peer_addresses_on_metrics);
            let m = &mut self.series(a.pid, &a.comm, a.cgroup_id, now).metrics;
            match a.kind {
                ActivityKind::Tracked {
                    new,
                    connect_ns,
                    accept_ns,
                } => {
                    if let Some(ns) = accept_ns {
                        m.record(
                            Instrument::AcceptDuration,
                            &attrs,
                            ns as f64 / 1e9,
                            t,
                            max_series,
                        );
                    }
                    m.add(Instrument::ConnectionActive, &attrs, 1, t, max_series);
                    if new {
                        m.add(Instrument::ConnectionOpened, &attrs, 1, t, max_series);
                    }
                    if let Some(ns) = connect_ns {
                        m.record(
                            Instrument::ConnectDuration,
                            &attrs,
                            ns as f64 / 1e9,
                            t,
                            max_series,
                        );
                    }
                }
                ActivityKind::Bytes { sent, received } => {
                    for (direction, bytes) in [("transmit", sent), ("receive", received)] {
                        if bytes > 0 {
                            let mut with_direction = attrs.clone();
                            with_direction.push(("network.io.direction", direction.into()));
                            with_direction.sort_by(|x, y| x.0.cmp(y.0));
                            m.add(
                                Instrument::ConnectionIo,
                                &with_direction,
                                bytes as i64,
                                t,
                                max_series,
                            );
                        }
                    }
                }
                ActivityKind::Untracked { closed } => {
                    m.add(Instrument::ConnectionActive, &attrs, -1, t, max_series);
                    if closed {
                        m.add(Instrument::ConnectionClosed, &attrs, 1, t, max_series);
                    }
                }
                other => {
                    kernel::add_activity(m, &attrs, &other, &reasons, t, max_series);
                }
            }
        }
    }

    /// Exchanges whose spans and logs wait to be sent.
    pub fn pending_exchanges(&self) -> usize {
        self.pending_exchanges
    }

    /// The waiting spans and logs, one resource per workload, as encoded
    /// `ExportTraceServiceRequest` and `ExportLogsServiceRequest`.
    pub fn take_spans_and_logs(&mut self) -> Option<(Payload, Payload)> {
        if self.pending_exchanges == 0 {
            return None;
        }
        self.pending_exchanges = 0;
        // Exact sizes up front: the bodies wait in export queues, where spare capacity from
        // a doubling Vec would be memory held for nothing.
        let framing = |len: usize| 1 + varint_len(len as u64) + len;
        let sizes = |key: &WorkloadKey, items: usize| {
            let resource = self
                .workloads
                .get(key)
                .map_or(0, |w| w.resource_bytes.len());
            let scope_msg = framing(self.scope_bytes.len()) + items + framing(SCHEMA_URL.len());
            framing(framing(resource) + framing(scope_msg) + framing(SCHEMA_URL.len()))
        };
        let (mut traces_len, mut logs_len) = (0, 0);
        for (key, p) in &self.pending {
            if p.span_count > 0 {
                traces_len += sizes(key, p.spans.len());
            }
            if p.log_count > 0 {
                logs_len += sizes(key, p.logs.len());
            }
        }
        let mut traces = Vec::with_capacity(traces_len);
        let mut logs = Vec::with_capacity(logs_len);
        let (mut span_count, mut log_count) = (0, 0);
        for (key, pending) in &self.pending {
            let resource = self
                .workloads
                .get(key)
                .map_or(&[][..], |w| w.resource_bytes.as_slice());
            // Export*ServiceRequest.resource_* = 1; Resource*: resource = 1, scope_* = 2,
            // schema_url = 3; Scope*: scope = 1, spans / log_records = 2 (already framed in
            // `items`), schema_url = 3.
            for (items, count, out, total) in [
                (
                    &pending.spans,
                    pending.span_count,
                    &mut traces,
                    &mut span_count,
                ),
                (&pending.logs, pending.log_count, &mut logs, &mut log_count),
            ] {
                if count == 0 {
                    continue;
                }
                let url = SCHEMA_URL.as_bytes();
                let scope_msg = framing(self.scope_bytes.len()) + items.len() + framing(url.len());
                let resource_msg =
                    framing(resource.len()) + framing(scope_msg) + framing(url.len());
                put_len_header(out, 1, resource_msg);
                put_bytes(out, 1, resource);
                put_len_header(out, 2, scope_msg);
                put_bytes(out, 1, &self.scope_bytes);
                out.extend_from_slice(items);
                put_bytes(out, 3, url); // the scope's, ending its message
                put_bytes(out, 3, url); // the resource's
                *total += count;
            }
        }
        debug_assert_eq!((traces.len(), logs.len()), (traces_len, logs_len));
        self.reuse_pending();
        let encoded = |signal, items, body: Vec<u8>| Payload::Encoded {
            signal,
            items,
            body: bytes::Bytes::from(body),
        };
        Some((
            encoded(SignalKind::Traces, span_count, traces),
            encoded(SignalKind::Logs, log_count, logs),
        ))
    }

    /// Empties the pending buffers for the next batch. A workload's buffers are kept, with
    /// room for twice what this batch held, while it has exchanges in each batch: growing
    /// them again by doubling each batch was a tenth of the OTLP path's copying at
    /// saturation. A workload with nothing in this batch gives its buffers back.
    fn reuse_pending(&mut self) {
        self.pending.retain(|_, p| {
            if p.span_count == 0 && p.log_count == 0 {
                return false;
            }
            for buf in [&mut p.spans, &mut p.logs] {
                let used = buf.len();
                buf.clear();
                buf.shrink_to(2 * used);
            }
            p.span_count = 0;
            p.log_count = 0;
            true
        });
    }

    /// Every workload's metrics as of `now`, in requests no larger than the configured
    /// size; forgets workloads idle longer than the TTL.
    pub fn collect_metrics(&mut self, now: SystemTime) -> Vec<Payload> {
        let t = unix_nanos(now);
        let mut request = ExportMetricsServiceRequest::default();
        for series in self.series.values_mut() {
            let metrics = series
                .metrics
                .collect(t, self.last_collect, self.settings.delta);
            if metrics.is_empty() {
                continue;
            }
            request.resource_metrics.push(ResourceMetrics {
                resource: Some(series.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    schema_url: SCHEMA_URL.into(),
                }],
                schema_url: SCHEMA_URL.into(),
            });
        }
        self.last_collect = t;
        let ttl = self.settings.workload_ttl;
        let pending = &self.pending;
        let processes = &mut self.processes;
        self.workloads.retain(|key, w| {
            let keep = pending
                .get(key)
                .is_some_and(|p| p.span_count > 0 || p.log_count > 0)
                || now.duration_since(w.last_active).unwrap_or_default() < ttl;
            if !keep {
                processes.forget(key.0);
            }
            keep
        });
        self.series
            .retain(|_, s| now.duration_since(s.last_active).unwrap_or_default() < ttl);
        split_metrics(request, self.settings.metric_request_max_bytes)
            .into_iter()
            .map(Payload::Metrics)
            .collect()
    }

    /// Workloads currently known.
    #[cfg(test)]
    pub fn workloads(&self) -> usize {
        self.workloads.len()
    }
}

/// Where a process belongs: the resource of its spans and logs, the owner of its metric
/// series, and whether it waits for its pod (a process in a container the index does not
/// know yet: just started, or the watches have not listed).
struct Placement {
    resource: Resource,
    owner: MetricOwner,
    awaiting_pod: Option<u64>,
}

impl Placement {
    /// The resource of the owner's metrics: a container's leaves out the process.
    fn metric_resource(&self) -> Resource {
        match self.owner {
            MetricOwner::Container { .. } => without_process(&self.resource),
            MetricOwner::Process(_) => self.resource.clone(),
        }
    }
}

fn place(
    resources: &Resources,
    kube: Option<&KubeView>,
    (pid, comm, cgroup_id): (u32, &Arc<str>, u64),
    processes: &mut ProcessCache,
) -> Placement {
    let process = processes.get(pid, comm, cgroup_id);
    let alone = |resource| Placement {
        resource,
        owner: MetricOwner::Process((pid, comm.clone())),
        awaiting_pod: None,
    };
    let Some((kube, container)) = kube.zip(process.container.as_ref()) else {
        return alone(resources.workload(&process, None));
    };
    let generation = kube.generation.load(Relaxed);
    let pod =
        kube.index.read().ok().and_then(|index| {
            index.local_pod(&container.id, container.pod_uid.as_deref(), kube.rules)
        });
    let resource = resources.workload(&process, pod.as_ref());
    match pod {
        Some(id) => Placement {
            resource,
            owner: MetricOwner::Container {
                pod_uid: id.pod.uid.clone(),
                container: id.container.map(|c| c.name),
            },
            awaiting_pod: None,
        },
        None => Placement {
            awaiting_pod: Some(generation),
            ..alone(resource)
        },
    }
}

/// Connection metric attributes: the traced process's TCP role, the server's port and, for
/// a client, the server's address (servers are few); the peer's own address only when asked
/// for (`peer_addresses`): on a server's metrics it would be a series per client. The
/// client's ephemeral port is left out.
fn connection_attributes(
    a: &ConnectionActivity,
    peer: Option<&PeerInfo>,
    peer_addresses: bool,
) -> Attrs {
    let mut attrs: Attrs = vec![("network.transport", "tcp".into())];
    let role = match a.role {
        Some(Role::Client) => "client",
        Some(Role::Server) => "server",
        None => "unknown",
    };
    attrs.push(("netsonde.connection.role", role.into()));
    if let Some(remote) = a.remote {
        if peer_addresses {
            attrs.push(("network.peer.address", remote.ip().to_string().into()));
        }
        if a.role == Some(Role::Client) {
            attrs.push(("server.address", remote.ip().to_string().into()));
        }
        attrs.push((
            "network.type",
            if remote.is_ipv4() { "ipv4" } else { "ipv6" }.into(),
        ));
    }
    let server_port = match a.role {
        Some(Role::Client) => a.remote.map(|s: SocketAddr| s.port()),
        Some(Role::Server) => a.local.map(|s| s.port()),
        None => None,
    };
    if let Some(p) = server_port {
        attrs.push(("server.port", p.into()));
    }
    if let Some(peer) = peer {
        peer.metric_attributes(&mut attrs);
    }
    attrs.sort_by(|x, y| x.0.cmp(y.0));
    attrs
}

#[cfg(test)]
mod tests;
