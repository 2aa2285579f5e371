//! Issue 19: who read each message (`get_group_msg_receipt_detail`), from the client's paging
//! against the simulator to `receipts.read_events` after runs of the real binary.

use crate::helpers::*;
use receipt_exporter::chat::{ChatClient, ChatError, ClientConfig};
use receipt_exporter::secret::Secret;
use receipt_exporter::sim::{SimGroup, Simulator};

fn client(sim: &Simulator) -> ChatClient {
    ChatClient::new(ClientConfig::new(
        sim.base_url(),
        SDKAPPID,
        "administrator",
        Secret::new(KEY),
    ))
    .unwrap()
}

/// The first message of `group` with a receipt and at least `min_read` readers now.
fn message_with_readers(sim: &Simulator, group: &SimGroup, min_read: usize) -> u64 {
    (1..group.next_msg_seq)
        .find(|&seq| {
            sim.read_list(&group.group_id, seq)
                .is_some_and(|l| l.len() >= min_read)
        })
        .expect("a message with readers")
}

#[tokio::test]
async fn the_client_pages_through_the_simulators_read_lists() {
    let sim = simulator(2, 40, |c| c.read_page_max = 7);
    let client = client(&sim);
    let group = &sim.groups()[0];
    let seq = message_with_readers(&sim, group, 15);
    let want = sim.read_list(&group.group_id, seq).unwrap();
    let got = client
        .pull_read_list(&group.group_id, seq, 100)
        .await
        .unwrap();
    assert!(got.finished && !got.no_receipt);
    assert_eq!(got.calls as usize, want.len().div_ceil(7));
    let readers: Vec<String> = got.pages.iter().flat_map(|(_, p)| p.clone()).collect();
    assert_eq!(readers, want);
    let calls = sim
        .stats()
        .endpoint(receipt_exporter::sim::Endpoint::GroupMsgReceiptDetail)
        .calls;
    assert_eq!(calls, u64::from(got.calls));

    // Cut short by the page budget: not finished, no more calls than allowed.
    let cut = client
        .pull_read_list(&group.group_id, seq, 1)
        .await
        .unwrap();
    assert!(!cut.finished);
    assert_eq!((cut.calls, cut.pages[0].1.len()), (1, 7));

    // A message without a receipt is an answer; a missing group is the group's error.
    let none = (1..group.next_msg_seq)
        .find(|&s| sim.read_list(&group.group_id, s).is_none())
        .expect("about one in ten messages has no receipt");
    let got = client
        .pull_read_list(&group.group_id, none, 5)
        .await
        .unwrap();
    assert!(got.no_receipt && got.pages.is_empty());
    let err = client
        .pull_read_list("@TGS#nosuch", 1, 5)
        .await
        .unwrap_err();
    assert!(matches!(err, ChatError::Group { code: 10010, .. }), "{err}");
    sim.shutdown().await;
}
