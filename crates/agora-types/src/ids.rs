//! Newtype ids. Ids are assigned sequentially by the exchange's state machine,
//! so replaying the event log reproduces them exactly.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::num::ParseIntError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.trim().parse().map($name)
            }
        }
    };
}

id_type!(
    /// A tenant: an AI lab or researcher that buys GPU time.
    TenantId
);
id_type!(
    /// A provider: an owner of GPUs that sells their time.
    ProviderId
);
id_type!(
    /// One running agent process of a provider (a provider may run several).
    AgentId
);
id_type!(
    /// A node: a machine with GPUs of one model, reported by an agent.
    NodeId
);
id_type!(
    /// A job as the tenant submitted it.
    JobId
);
id_type!(
    /// One placeable unit of a job: the whole gang of a training job, or one task of a batch.
    OrderId
);
id_type!(
    /// GPUs of one or more nodes granted to one order for a while.
    LeaseId
);
id_type!(
    /// A site of a provider: one location with one power budget (a datacenter, an orbital platform).
    SiteId
);
id_type!(
    /// A fabric domain: nodes sharing one InfiniBand/Ethernet fabric (e.g. a 32-node scalable unit).
    DomainId
);
id_type!(
    /// A region (a metro or cloud region such as `eu-west`), numbered by the
    /// exchange in the order it first sees its name; the latency matrix is
    /// given between regions.
    RegionId
);
id_type!(
    /// A reservation contract: a tenant holds GPUs of one model at one provider for a term.
    ContractId
);
