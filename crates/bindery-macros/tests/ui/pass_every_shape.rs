use bindery::prelude::*;
use futures::Stream;

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("bad order")]
struct BadOrder;

#[bindery::function]
async fn source() -> Order {
    Order { id: 1 }
}

#[bindery::function]
async fn stream_source() -> impl Stream<Item = Order> {
    futures::stream::iter(vec![Order { id: 1 }])
}

#[bindery::function]
async fn processor(order: Order, _headers: Headers, Key(_key): Key, Attempt(_n): Attempt) -> Result<Option<Order>, BadOrder> {
    Ok(Some(order))
}

#[bindery::function]
async fn message_processor(message: Message<Order>) -> Message<Order> {
    message
}

#[bindery::function(name = "text-sink")]
async fn sink(_text: String, _bytes_too: Bytes, State(_n): State<u32>, _sender: Sender) {}

fn main() {}
