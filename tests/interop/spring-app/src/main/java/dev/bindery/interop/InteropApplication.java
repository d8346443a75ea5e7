package dev.bindery.interop;

import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Consumer;
import java.util.function.Function;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.ApplicationRunner;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.cloud.stream.function.StreamBridge;
import org.springframework.context.annotation.Bean;
import org.springframework.messaging.Message;
import org.springframework.messaging.support.MessageBuilder;

/**
 * A Spring Cloud Stream service written as a Spring user writes one, with the
 * binders' defaults. The interop tests pick the functions
 * ({@code spring.cloud.function.definition}), the binder
 * ({@code spring.cloud.stream.default-binder}) and the destinations on the
 * command line, and read what the app did from the lines it prints:
 * {@code INTEROP <json>}, one per event, on stdout.
 */
@SpringBootApplication
public class InteropApplication {

	public static void main(String[] args) {
		SpringApplication.run(InteropApplication.class, args);
	}

	/** Processor: the sku in upper case. */
	@Bean
	public Function<Order, Order> uppercase() {
		return order -> new Order(order.id(), order.sku().toUpperCase(), order.qty());
	}

	/** Sink: prints each message it gets, decoded payload and every header. */
	@Bean
	public Consumer<Message<Order>> log() {
		return message -> event("received", "log", message);
	}

	/**
	 * Sink that fails for an order whose sku starts with "poison", so the
	 * binder's dead-letter path (RabbitMQ republishToDlq, Kafka enableDlq)
	 * takes it; other orders are printed like {@link #log()}.
	 */
	@Bean
	public Consumer<Message<Order>> failing() {
		return message -> {
			if (message.getPayload().sku().startsWith("poison")) {
				event("failing", "failing", message);
				throw new IllegalStateException("order " + message.getPayload().id() + " is poison");
			}
			event("received", "failing", message);
		};
	}

	/**
	 * Producer: once the app has started, sends {@code interop.produce.count}
	 * orders through StreamBridge to binding {@code produce-out-0} (its
	 * destination and partitioning come from the binding's properties), then
	 * prints a {@code produced} event. With {@code interop.produce.keyed} each
	 * order also goes, with sku prefix "keyed-", to binding
	 * {@code keyed-out-0} (configured with a Kafka {@code messageKeyExpression}
	 * instead of a {@code partitionKeyExpression}).
	 */
	@Bean
	public ApplicationRunner produce(StreamBridge bridge,
			@Value("${interop.produce.count:0}") int count,
			@Value("${interop.produce.sku-prefix:sku-}") String skuPrefix,
			@Value("${interop.produce.keys:0}") int keys,
			@Value("${interop.produce.keyed:false}") boolean keyed) {
		return args -> {
			for (int i = 0; i < count; i++) {
				// With keys > 0 the orders carry a partition key in a header,
				// which partitionKeyExpression=headers['partitionKey'] reads.
				String sku = skuPrefix + i;
				MessageBuilder<Order> builder = MessageBuilder.withPayload(new Order(i, sku, i + 1));
				if (keys > 0) {
					builder.setHeader("partitionKey", "key-" + (i % keys));
				}
				if (!bridge.send("produce-out-0", builder.build())) {
					throw new IllegalStateException("StreamBridge refused order " + i);
				}
				if (keyed) {
					MessageBuilder<Order> copy = MessageBuilder.withPayload(new Order(i, "keyed-" + i, i + 1))
						.setHeader("partitionKey", "key-" + (i % Math.max(keys, 1)));
					if (!bridge.send("keyed-out-0", copy.build())) {
						throw new IllegalStateException("StreamBridge refused keyed order " + i);
					}
				}
			}
			System.out.println("INTEROP {\"event\":\"produced\",\"count\":" + (keyed ? 2 * count : count) + "}");
			System.out.flush();
		};
	}

	private static void event(String kind, String function, Message<Order> message) {
		Order order = message.getPayload();
		StringBuilder out = new StringBuilder("INTEROP {\"event\":").append(quote(kind))
				.append(",\"function\":").append(quote(function))
				.append(",\"payload\":{\"id\":").append(order.id())
				.append(",\"sku\":").append(quote(order.sku()))
				.append(",\"qty\":").append(order.qty()).append("},\"headers\":{");
		Map<String, Object> headers = new TreeMap<>(message.getHeaders());
		boolean first = true;
		for (Map.Entry<String, Object> header : headers.entrySet()) {
			if (!first) {
				out.append(',');
			}
			first = false;
			out.append(quote(header.getKey())).append(':').append(describe(header.getValue()));
		}
		out.append("}}");
		// One line per event, flushed, so the test reads it as soon as it happens.
		System.out.println(out);
		System.out.flush();
	}

	/** A header value with its Java type, and bytes as base64 and text, so the test sees encodings. */
	private static String describe(Object value) {
		if (value instanceof byte[] bytes) {
			return "{\"type\":\"byte[]\",\"base64\":" + quote(Base64.getEncoder().encodeToString(bytes))
					+ ",\"text\":" + quote(new String(bytes, StandardCharsets.UTF_8)) + "}";
		}
		String type = value == null ? "null" : value.getClass().getName();
		return "{\"type\":" + quote(type) + ",\"text\":" + quote(String.valueOf(value)) + "}";
	}

	private static String quote(String text) {
		StringBuilder out = new StringBuilder("\"");
		for (char c : text.toCharArray()) {
			switch (c) {
				case '"' -> out.append("\\\"");
				case '\\' -> out.append("\\\\");
				case '\n' -> out.append("\\n");
				case '\r' -> out.append("\\r");
				case '\t' -> out.append("\\t");
				default -> {
					if (c < 0x20) {
						out.append(String.format("\\u%04x", (int) c));
					}
					else {
						out.append(c);
					}
				}
			}
		}
		return out.append('"').toString();
	}
}
