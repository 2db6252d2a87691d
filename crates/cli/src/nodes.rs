//! `stackctl node update NODE [--availability …] [--label-add k=v…]
//! [--label-rm k…]` and `stackctl node ps NODE`.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use stackd_proto::v1;

use crate::args::{Global, NodeAvailability};
use crate::client::{connect, status};
use crate::inspect::print_tasks;

/// `KEY=VALUE` (or `KEY`, an empty value) as `--label-add` takes it.
fn parse_labels(args: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for a in args {
        let (k, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
        if k.is_empty() {
            bail!("--label-add {a:?}: give KEY=VALUE (or KEY alone for an empty value)");
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            bail!("--label-add: label {k} is given twice");
        }
    }
    Ok(labels)
}

/// The wire availability.
fn wire(a: NodeAvailability) -> v1::Availability {
    match a {
        NodeAvailability::Active => v1::Availability::Active,
        NodeAvailability::Pause => v1::Availability::Pause,
        NodeAvailability::Drain => v1::Availability::Drain,
    }
}

/// What the change does, for the operator: `availability drain, labels +disk=ssd -role`.
fn summary(availability: Option<NodeAvailability>, add: &BTreeMap<String, String>, rm: &[String]) -> String {
    let mut parts = Vec::new();
    if let Some(a) = availability {
        parts
            .push(format!("availability {}", wire(a).as_str_name().trim_start_matches("AVAILABILITY_").to_lowercase()));
    }
    let labels: Vec<String> =
        rm.iter().map(|k| format!("-{k}")).chain(add.iter().map(|(k, v)| format!("+{k}={v}"))).collect();
    if !labels.is_empty() {
        parts.push(format!("labels {}", labels.join(" ")));
    }
    parts.join(", ")
}

/// `stackctl node update NODE …`: all of the change or, refused, none of it.
pub async fn update(
    g: &Global,
    node: &str,
    availability: Option<NodeAvailability>,
    label_add: &[String],
    label_rm: &[String],
) -> Result<i32> {
    if availability.is_none() && label_add.is_empty() && label_rm.is_empty() {
        bail!("nothing to change: give --availability, --label-add or --label-rm");
    }
    let add = parse_labels(label_add)?;
    let req = v1::UpdateNodeRequest {
        node: node.to_string(),
        availability: availability.map(|a| wire(a).into()),
        label_add: add.clone().into_iter().collect(),
        label_rm: label_rm.to_vec(),
    };
    let mut c = connect(g).await?;
    // The same update twice changes nothing the second time: it may go to the next manager.
    let r = c
        .read(|mut c| {
            let req = req.clone();
            async move { c.update_node(req).await }
        })
        .await
        .map_err(status)?
        .into_inner();
    if r.unchanged {
        out!("Node {node} is unchanged: its availability and labels were so already");
    } else {
        out!("Node {node} updated: {}", summary(availability, &add, label_rm));
    }
    Ok(crate::EXIT_OK)
}

/// `stackctl node ps NODE`: the tasks on a node, as `ps` lists them.
pub async fn ps(g: &Global, node: &str, no_trunc: bool) -> Result<i32> {
    let mut c = connect(g).await?;
    let req = v1::ListTasksRequest { node: node.to_string(), stale: g.stale, ..Default::default() };
    let (tasks, node_names) = crate::inspect::fetch_tasks(&mut c, req).await?;
    print_tasks(g, tasks, &node_names, no_trunc)?;
    Ok(crate::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_as_key_value_or_key_alone() {
        let l = parse_labels(&["disk=ssd".into(), "gpu".into(), "a=b=c".into()]).expect("labels");
        assert_eq!(l["disk"], "ssd");
        assert_eq!(l["gpu"], "");
        assert_eq!(l["a"], "b=c");
        assert!(parse_labels(&["=x".into()]).is_err());
        assert!(parse_labels(&["k=1".into(), "k=2".into()]).is_err());
    }

    #[test]
    fn the_summary_says_what_changes() {
        let add = parse_labels(&["disk=ssd".into()]).expect("labels");
        assert_eq!(
            summary(Some(NodeAvailability::Drain), &add, &["role".into()]),
            "availability drain, labels -role +disk=ssd"
        );
        assert_eq!(summary(None, &BTreeMap::new(), &["x".into()]), "labels -x");
    }
}
